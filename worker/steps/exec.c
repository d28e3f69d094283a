/*
 * Step "exec": child processes through uv_spawn on the loop, never a shell.
 * Only programs the worker's configuration names may run: argv[0] must be
 * an absolute path that resolves (symlinks followed) to an entry of
 * TQ_EXEC_ALLOW (colon-separated) or to TQ_TERRAFORM_BIN; a shell (sh, bash,
 * dash, ..., env, busybox, anything in /etc/shells) is refused even when
 * listed, as it would run whatever text a pipeline gives it. A refused
 * command is TQ_EINVALID before anything runs, and so is an argv element
 * that carries a known secret (tq/redact.h): secrets go in params.env.
 * Params (rendered templates):
 *   argv        ["prog", "arg", ...]          one command, or
 *   steps       [["prog", ...], ...]          commands run in sequence; the
 *                                             first failure ends the step
 *   undo_argv / undo_steps                    the same for the undo; absent:
 *                                             the undo does nothing
 *   env         {"NAME": "value"}             added to a minimal environment
 *                                             (PATH and HOME only, never the
 *                                             worker's whole environment)
 *   cwd         working directory kept between runs (created 0700 with any
 *               missing part). Default: scratch space made for this run only,
 *               <TQ_WORK_DIR or /tmp/tenantq-work>/tq-<tenant>-XXXXXX (mkdtemp,
 *               0700), removed with its content when the run ends, however it
 *               ends: nothing a step needs later may live on a worker's disk
 *   files       {"name": "text" | {...}}      written into cwd (0600) before
 *                                             the commands, forward and undo;
 *                                             an object or array as JSON text
 *   remove_cwd_on_undo  true: a successful undo removes an explicit cwd
 *   terraform_backend   "pg": Terraform keeps its state in PostgreSQL, shared
 *               by every worker: tq_backend.tf.json in cwd declares the
 *               built-in pg backend with schema tq_terraform, and the child
 *               gets the worker's TQ_TERRAFORM_PG_URL as PG_CONN_STR (in its
 *               environment only: never in a file or argv). The commands
 *               select the tenant's workspace themselves
 *               (`workspace select -or-create=true ${tenant.id}` after init);
 *               Terraform's lock on that workspace (a PostgreSQL advisory
 *               lock) keeps two workers from applying it at once
 * Making the scratch directory, writing the files and removing the directory
 * run on the libuv thread pool, never on the loop thread.
 * Each command runs in its own process group (UV_PROCESS_DETACHED: setsid).
 * Cancel (timeout, drain) sends SIGTERM to the group and SIGKILL 2 s later;
 * when the command itself exits, what is left of its group is killed too.
 * stdout and stderr are read through pipes, each keeping its last 64 KiB.
 * Exit 0 is success; anything else is TQ_ESTEP with the last line of stderr.
 * The output holds exit code, duration and the capped tails per command.
 *
 * Idempotency is the commands' own: the step only re-runs them. Terraform,
 * whose apply converges, fits when its state is shared (terraform_backend
 * "pg"): a retry or an undo on any worker starts from the same state.
 *   steps      [["terraform","init","-input=false"],
 *               ["terraform","workspace","select","-or-create=true","${tenant.id}"],
 *               ["terraform","plan","-input=false","-lock-timeout=300s","-out=tfplan"],
 *               ["terraform","apply","-input=false","-lock-timeout=300s","tfplan"]]
 *   undo_steps [init, workspace select as above,
 *               ["terraform","destroy","-input=false","-lock-timeout=300s","-auto-approve"]]
 * with main.tf.json from params.files: {"module": {"tenant": {"source":
 * ".../terraform/modules/tenant", "tenant_id": "${tenant.id}", ...}}} (see
 * terraform/README.md; Terraform's own "${...}" cannot appear in params,
 * which are templates). Destroy of nothing succeeds, so the undo is safe to
 * run twice as well. Secrets belong in env, never in argv (command lines are
 * visible to every local user).
 */
#define _XOPEN_SOURCE 700   /* realpath */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../step.h"
#include "tq/log.h"
#include "tq/redact.h"
#include "tq/util.h"

#define OUT_CAP (64 * 1024)
#define READ_CHUNK (64 * 1024)
#define KILL_GRACE_MS 2000    /* SIGTERM -> SIGKILL */
#define DRAIN_MS 2000         /* after exit: wait this long for the pipes to close */
#define MAX_ARGS 256
#define DEFAULT_WORK_DIR "/tmp/tenantq-work"
#define TF_BACKEND_FILE "tq_backend.tf.json"
/* The schema, its table and index come from the platform's migrations: the
   backend's role needs no CREATE (which its own creation would). */
#define TF_BACKEND_DOC                                                                    \
    "{\"terraform\": {\"backend\": {\"pg\": {\"schema_name\": \"tq_terraform\","            \
    " \"skip_schema_creation\": true, \"skip_table_creation\": true,"                      \
    " \"skip_index_creation\": true}}}}\n"

/* The last OUT_CAP bytes of a stream, and how much there was. */
struct cap {
    char buf[OUT_CAP];
    size_t len;
    uint64_t total;
};

struct run {
    struct wk_step *s;
    uv_process_t proc;
    uv_pipe_t pipes[2];           /* stdout, stderr */
    uv_timer_t timer;
    enum { T_NONE, T_KILL, T_DRAIN } timer_mode;
    char rbuf[2][READ_CHUNK];
    struct cap cap[2];
    bool eof[2];
    bool live;                    /* spawned, exit not seen yet */
    bool exited;
    bool cancelled;
    bool finishing;
    int closing;                  /* handles of the current command not closed yet */
    int spawn_err;
    enum tq_err final;            /* the step's result, once finishing */
    int64_t exit_status;
    int term_signal;
    pid_t pid;
    uint64_t t0_ns;
    /* what to run */
    char **env;
    char *cwd;
    const json_t *cmds;           /* array of argv arrays (borrowed from params) */
    size_t next;
    bool remove_cwd;
    bool scratch;                 /* cwd made for this run: removed when it ends */
    bool tf_backend;              /* write TF_BACKEND_FILE into cwd */
    json_t *results;
    /* thread pool: setup (mkdtemp, files) before the commands, removal after */
    uv_work_t work;
    enum tq_err setup_err;
    int rm_errno;                 /* 0: removed */
};

/* ------------------------------------------------------------ text */

static void cap_append(struct cap *c, const char *p, size_t n)
{
    c->total += n;
    if (n >= OUT_CAP) {
        memcpy(c->buf, p + n - OUT_CAP, OUT_CAP);
        c->len = OUT_CAP;
        return;
    }
    if (c->len + n > OUT_CAP) {
        size_t drop = c->len + n - OUT_CAP;
        memmove(c->buf, c->buf + drop, c->len - drop);
        c->len -= drop;
    }
    memcpy(c->buf + c->len, p, n);
    c->len += n;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char b = p[0];
    if (b < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
        len = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        len = 3;
        if (b == 0xE0)
            lo = 0xA0;
        if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4;
        if (b == 0xF0)
            lo = 0x90;
        if (b == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

/*
 * Bytes as a JSON string: invalid UTF-8 (a tail cut inside a character,
 * binary output) and NUL (which jsonb refuses) become '?'.
 */
static json_t *text_json(const char *p, size_t n)
{
    char *t = tq_xmalloc(n + 1);
    size_t o = 0;
    const unsigned char *u = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t l = u[i] ? utf8_seq(u + i, n - i) : 0;
        if (l == 0) {
            t[o++] = '?';
            i++;
        } else {
            memcpy(t + o, p + i, l);
            o += l;
            i += l;
        }
    }
    json_t *j = json_stringn(t, o);
    free(t);
    return j;
}

/* The last non-empty line of c, printable, into out. */
static void last_line(const struct cap *c, char *out, size_t outlen)
{
    size_t end = c->len;
    while (end > 0 && (c->buf[end - 1] == '\n' || c->buf[end - 1] == '\r' ||
                       c->buf[end - 1] == ' ' || c->buf[end - 1] == '\t'))
        end--;
    size_t start = end;
    while (start > 0 && c->buf[start - 1] != '\n')
        start--;
    size_t o = 0;
    for (size_t i = start; i < end && o + 1 < outlen; i++) {
        unsigned char ch = (unsigned char)c->buf[i];
        out[o++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
    }
    out[o] = '\0';
}

/* ------------------------------------------------------------ setup */

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* Programs that run whatever text they are given: never on the allow-list. */
static bool is_shell(const char *real)
{
    static const char *const names[] = {"sh",  "bash", "dash", "rbash", "zsh",     "ksh",
                                        "mksh", "csh", "tcsh", "fish",  "busybox", "env"};
    const char *base = strrchr(real, '/');
    base = base ? base + 1 : real;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(base, names[i]) == 0)
            return true;
    bool shell = false;
    FILE *f = fopen("/etc/shells", "re");
    char line[PATH_MAX], rl[PATH_MAX];
    while (f && !shell && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        shell = line[0] == '/' && realpath(line, rl) && strcmp(rl, real) == 0;
    }
    if (f)
        fclose(f);
    return shell;
}

/*
 * Is prog one of the programs the worker's configuration allows: an entry of
 * TQ_EXEC_ALLOW or TQ_TERRAFORM_BIN, compared after resolving symlinks? A
 * shell never is, whatever the configuration says. false: errstr says why.
 */
static bool allowed(struct wk_step *s, const char *prog, const char *what)
{
    char real[PATH_MAX], entry_real[PATH_MAX];
    if (prog[0] != '/') {
        snprintf(s->errstr, sizeof(s->errstr), "params.%s[0] \"%.100s\" must be an absolute path"
                 " on the worker's allow-list TQ_EXEC_ALLOW", what, prog);
        return false;
    }
    if (!realpath(prog, real)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.%s[0] \"%.100s\": %s", what, prog,
                 strerror(errno));
        return false;
    }
    if (is_shell(real)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.%s[0] \"%.100s\" is a shell, which exec"
                 " never runs", what, prog);
        return false;
    }
    char *list = tq_xasprintf("%s:%s", s->set->exec_allow ? s->set->exec_allow : "",
                              s->set->terraform_bin ? s->set->terraform_bin : "");
    bool ok = false;
    char *save = NULL;
    for (char *e = strtok_r(list, ":", &save); e && !ok; e = strtok_r(NULL, ":", &save))
        ok = e[0] == '/' && realpath(e, entry_real) && strcmp(entry_real, real) == 0;
    free(list);
    if (!ok)
        snprintf(s->errstr, sizeof(s->errstr), "params.%s[0] \"%.100s\" is not on the worker's"
                 " allow-list TQ_EXEC_ALLOW", what, prog);
    return ok;
}

/* NULL (errstr set) unless a is a non-empty array of at most MAX_ARGS strings
   whose first is a program on the allow-list. */
static bool argv_valid(struct wk_step *s, const json_t *a, const char *what)
{
    size_t i;
    const json_t *x;
    if (!json_is_array(a) || json_array_size(a) == 0 || json_array_size(a) > MAX_ARGS) {
        snprintf(s->errstr, sizeof(s->errstr),
                 "params.%s must be a non-empty array of at most %d strings", what, MAX_ARGS);
        return false;
    }
    json_array_foreach(a, i, x) {
        if (!json_is_string(x) || (i == 0 && json_string_length(x) == 0)) {
            snprintf(s->errstr, sizeof(s->errstr), "params.%s[%zu] must be a %sstring", what, i,
                     i == 0 ? "non-empty " : "");
            return false;
        }
        /* command lines are visible to every local user: secrets go in params.env */
        char *copy = tq_xstrdup(json_string_value(x));
        bool secret = tq_redact(copy);
        free(copy);
        if (secret) {
            snprintf(s->errstr, sizeof(s->errstr), "params.%s[%zu] carries a secret; pass it"
                     " in params.env instead (command lines are visible to every local user)",
                     what, i);
            return false;
        }
    }
    return allowed(s, json_string_value(json_array_get(a, 0)), what);
}

static char **argv_of(const json_t *a)
{
    size_t n = json_array_size(a);
    char **v = tq_xcalloc(n + 1, sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = tq_xstrdup(json_string_value(json_array_get(a, i)));
    return v;
}

/* The commands of this phase: a fresh array of argv arrays, or NULL (none / invalid). */
static json_t *commands(struct wk_step *s, bool *invalid)
{
    const char *one = s->undo ? "undo_argv" : "argv";
    const char *many = s->undo ? "undo_steps" : "steps";
    const json_t *a = json_object_get(s->params, one), *m = json_object_get(s->params, many);
    *invalid = true;
    if (a && m) {
        snprintf(s->errstr, sizeof(s->errstr), "params.%s and params.%s exclude each other", one,
                 many);
        return NULL;
    }
    if (a) {
        if (!argv_valid(s, a, one))
            return NULL;
        *invalid = false;
        return json_pack("[O]", a);
    }
    if (m) {
        char what[64];
        size_t i;
        const json_t *x;
        if (!json_is_array(m) || json_array_size(m) == 0) {
            snprintf(s->errstr, sizeof(s->errstr), "params.%s must be a non-empty array", many);
            return NULL;
        }
        json_array_foreach(m, i, x) {
            snprintf(what, sizeof(what), "%s[%zu]", many, i);
            if (!argv_valid(s, x, what))
                return NULL;
        }
        *invalid = false;
        return json_incref((json_t *)m);
    }
    if (!s->undo)
        snprintf(s->errstr, sizeof(s->errstr), "params.argv or params.steps is required");
    else
        *invalid = false;   /* no undo commands: the undo has nothing to do */
    return NULL;
}

/*
 * PATH and HOME, then params.env, then PG_CONN_STR when pg_conn is set: the
 * child sees nothing else of ours.
 */
static char **make_env(struct wk_step *s, const char *cwd, const char *pg_conn)
{
    const json_t *e = json_object_get(s->params, "env");
    size_t n = json_is_object(e) ? json_object_size(e) : 0, k = 0;
    char **v = tq_xcalloc(n + 4, sizeof(*v));
    const char *path = s->set->child_path, *home = s->set->child_home;
    bool has_path = json_object_get(e, "PATH") != NULL, has_home = json_object_get(e, "HOME") != NULL;
    if (!has_path)
        v[k++] = tq_xasprintf("PATH=%s", path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
    if (!has_home)
        v[k++] = tq_xasprintf("HOME=%s", home && *home ? home : cwd);
    const char *name;
    const json_t *val;
    json_object_foreach((json_t *)e, name, val) {
        if (!*name || strchr(name, '=') || !json_is_string(val)) {
            snprintf(s->errstr, sizeof(s->errstr),
                     "params.env: \"%.64s\" must be a name without '=' with a string value", name);
            strv_free(v);
            return NULL;
        }
        if (pg_conn && strcmp(name, "PG_CONN_STR") == 0) {
            snprintf(s->errstr, sizeof(s->errstr),
                     "params.env: PG_CONN_STR comes from the worker's TQ_TERRAFORM_PG_URL when"
                     " params.terraform_backend is \"pg\"; remove it from params.env");
            strv_free(v);
            return NULL;
        }
        v[k++] = tq_xasprintf("%s=%s", name, json_string_value(val));
    }
    if (pg_conn)
        v[k++] = tq_xasprintf("PG_CONN_STR=%s", pg_conn);
    return v;
}

/* mkdir -p with mode 0700 for every part that is missing. */
static enum tq_err make_dir(struct wk_step *s, const char *dir)
{
    char *p = tq_xstrdup(dir);
    enum tq_err err = TQ_OK;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0')
            continue;
        char c = *q;
        *q = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            snprintf(s->errstr, sizeof(s->errstr), "could not create \"%s\": %s", p,
                     strerror(errno));
            err = TQ_EIO;
            break;
        }
        *q = c;
        if (c == '\0')
            break;
    }
    free(p);
    return err;
}

/* params.files into cwd, each through a temporary file and rename. */
static enum tq_err write_files(struct wk_step *s, const char *cwd)
{
    const json_t *f = json_object_get(s->params, "files");
    if (!f)
        return TQ_OK;
    if (!json_is_object(f)) {
        snprintf(s->errstr, sizeof(s->errstr), "params.files must be an object of strings");
        return TQ_EINVALID;
    }
    const char *name;
    const json_t *text;
    json_object_foreach((json_t *)f, name, text) {
        bool is_json = json_is_object(text) || json_is_array(text);
        if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
            (!json_is_string(text) && !is_json)) {
            snprintf(s->errstr, sizeof(s->errstr),
                     "params.files: \"%.64s\" must be a plain file name with a string, object"
                     " or array value", name);
            return TQ_EINVALID;
        }
        /* an object or array is written as JSON text (main.tf.json) */
        char *doc = is_json ? json_dumps(text, JSON_INDENT(2)) : NULL;
        const char *data = is_json ? doc : json_string_value(text);
        size_t len = is_json ? strlen(doc) : json_string_length(text);
        char *path = tq_xasprintf("%s/%s", cwd, name);
        char *tmp = tq_xasprintf("%s/.%s.tmp", cwd, name);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = fd >= 0 && write(fd, data, len) == (ssize_t)len;
        free(doc);
        int saved = errno;
        if (fd >= 0 && close(fd) != 0)
            ok = false;
        if (ok && rename(tmp, path) != 0) {
            saved = errno;
            ok = false;
        }
        if (!ok) {
            snprintf(s->errstr, sizeof(s->errstr), "could not write \"%s\": %s", path,
                     strerror(saved));
            unlink(tmp);
        }
        free(path);
        free(tmp);
        if (!ok)
            return TQ_EIO;
    }
    return TQ_OK;
}

/* The pg backend block (no credentials: those reach the child as PG_CONN_STR). */
static enum tq_err write_backend(struct wk_step *s, const char *cwd)
{
    char *path = tq_xasprintf("%s/" TF_BACKEND_FILE, cwd);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(TF_BACKEND_DOC);
    bool ok = fd >= 0 && write(fd, TF_BACKEND_DOC, len) == (ssize_t)len;
    int saved = errno;
    if (fd >= 0 && close(fd) != 0) {
        saved = errno;
        ok = false;
    }
    if (!ok)
        snprintf(s->errstr, sizeof(s->errstr), "could not write \"%s\": %s", path,
                 strerror(saved));
    free(path);
    return ok ? TQ_OK : TQ_EIO;
}

/* rm -r without following symbolic links; a missing path is success. */
static int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 || errno == ENOENT ? 0 : -1;
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = tq_xasprintf("%s/%s", path, e->d_name);
        if (rm_tree(p) != 0)
            rc = -1;
        free(p);
    }
    closedir(d);
    if (rc != 0)
        return rc;
    return rmdir(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* ------------------------------------------------------------ running */

/*
 * Descriptors the worker opened without close-on-exec (hiredis sockets, for
 * one) would be inherited by the command, which could then talk to the
 * platform's Redis or PostgreSQL as the worker. Mark every descriptor above
 * stderr close-on-exec first: the flag only matters at exec, nothing in the
 * worker hands a descriptor to a child on purpose, and libuv dup2()s the
 * child's stdio onto 0-2 (which clears the flag there). Another thread may
 * still open one between this sweep and the fork; that window is small.
 */
static void cloexec_all(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int self = dirfd(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            int fd = atoi(e->d_name);
            int fl = fd > 2 && fd != self ? fcntl(fd, F_GETFD) : -1;
            if (fl >= 0 && !(fl & FD_CLOEXEC))
                fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        }
        closedir(d);
        return;
    }
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = 3; fd < max; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
}

static void spawn_next(struct run *r);

static void timer_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    struct wk_step *s = r->s;
    enum tq_err err = r->final;
    if (r->cwd)
        json_object_set_new(s->output, "cwd", json_string(r->cwd));
    json_object_set_new(s->output, "commands", r->results);
    json_t *last = json_array_get(r->results, json_array_size(r->results) - 1);
    if (last) {
        json_object_set(s->output, "exit_code", json_object_get(last, "exit_code"));
        json_object_set(s->output, "stdout", json_object_get(last, "stdout"));
        json_object_set(s->output, "stderr", json_object_get(last, "stderr"));
    }
    strv_free(r->env);
    free(r->cwd);
    json_decref((json_t *)r->cmds);
    free(r);
    wk_step_done(s, err);
}

static void close_timer(struct run *r, enum tq_err err)
{
    r->final = err;
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, timer_closed);
}

static void rm_work(uv_work_t *w)
{
    struct run *r = w->data;
    r->rm_errno = rm_tree(r->cwd) == 0 ? 0 : (errno ? errno : EIO);
}

static void rm_after(uv_work_t *w, int status)
{
    struct run *r = w->data;
    enum tq_err err = r->final;
    int why = status != 0 ? -status : r->rm_errno;
    if (why != 0) {
        if (r->scratch) {
            /* the step's result stands; the scratch space is left to the host */
            tq_warn("exec: could not remove scratch directory \"%s\": %s", r->cwd, strerror(why));
        } else if (!err) {
            snprintf(r->s->errstr, sizeof(r->s->errstr), "could not remove \"%s\": %s", r->cwd,
                     strerror(why));
            err = TQ_EIO;
        }
    }
    close_timer(r, err);
}

static void finish(struct run *r, enum tq_err err)
{
    r->finishing = true;
    r->s->kind_data = NULL;
    r->final = err;
    uv_timer_stop(&r->timer);
    /* scratch space always goes; an explicit cwd after a successful undo if
       asked; both off the loop thread (a tree may be large) */
    if (r->cwd && (r->scratch || (!err && r->remove_cwd))) {
        r->work.data = r;
        int rc = uv_queue_work(r->s->loop, &r->work, rm_work, rm_after);
        if (rc == 0)
            return;
        if (r->scratch) {
            tq_warn("exec: could not queue the removal of scratch directory \"%s\": %s", r->cwd,
                    uv_strerror(rc));
        } else {
            snprintf(r->s->errstr, sizeof(r->s->errstr),
                     "could not queue the removal of \"%s\": %s", r->cwd, uv_strerror(rc));
            err = TQ_EIO;
        }
    }
    close_timer(r, err);
}

static json_t *result_json(struct run *r, const char *argv0)
{
    json_t *o = json_pack("{s:s, s:I}", "argv0", argv0, "duration_ms",
                          (json_int_t)((wk_now_ns() - r->t0_ns) / 1000000u));
    json_object_set_new(o, "exit_code", r->term_signal ? json_null() : json_integer(r->exit_status));
    if (r->term_signal)
        json_object_set_new(o, "signal", json_integer(r->term_signal));
    const char *names[2] = {"stdout", "stderr"};
    bool truncated = false;
    for (int i = 0; i < 2; i++) {
        json_object_set_new(o, names[i], text_json(r->cap[i].buf, r->cap[i].len));
        char key[32];
        snprintf(key, sizeof(key), "%s_bytes", names[i]);
        json_object_set_new(o, key, json_integer((json_int_t)r->cap[i].total));
        truncated |= r->cap[i].total > r->cap[i].len;
    }
    json_object_set_new(o, "truncated", json_boolean(truncated));
    return o;
}

/* The current command's handles are closed: record it, then go on or stop. */
static void command_done(struct run *r)
{
    struct wk_step *s = r->s;
    const json_t *argv = json_array_get(r->cmds, r->next);
    const char *argv0 = json_string_value(json_array_get(argv, 0));
    size_t n = json_array_size(r->cmds);
    if (r->spawn_err) {
        snprintf(s->errstr, sizeof(s->errstr), "%s run \"%.100s\" (command %zu of %zu): %s",
                 r->spawn_err == UV_ENOENT || r->spawn_err == UV_EACCES ? "cannot" : "could not",
                 argv0, r->next + 1, n, uv_strerror(r->spawn_err));
        finish(r, r->spawn_err == UV_ENOENT || r->spawn_err == UV_EACCES ? TQ_EINVALID : TQ_EIO);
        return;
    }
    json_array_append_new(r->results, result_json(r, argv0));
    if (r->cancelled) {
        snprintf(s->errstr, sizeof(s->errstr), "cancelled: process group of \"%.100s\" killed",
                 argv0);
        finish(r, TQ_ECANCELED);
        return;
    }
    if (r->exit_status != 0 || r->term_signal != 0) {
        char line[200];
        last_line(&r->cap[1], line, sizeof(line));
        if (!line[0])
            last_line(&r->cap[0], line, sizeof(line));
        char how[48];
        if (r->term_signal)
            snprintf(how, sizeof(how), "killed by signal %d", r->term_signal);
        else
            snprintf(how, sizeof(how), "exit code %lld", (long long)r->exit_status);
        snprintf(s->errstr, sizeof(s->errstr), "\"%.48s\" (command %zu of %zu) ended with %s%s%.80s",
                 argv0, r->next + 1, n, how, line[0] ? ": " : "", line);
        finish(r, TQ_ESTEP);
        return;
    }
    r->next++;
    spawn_next(r);
}

static void handle_closed(uv_handle_t *h)
{
    struct run *r = h->data;
    if (--r->closing == 0)
        command_done(r);
}

static void close_command(struct run *r)
{
    uv_timer_stop(&r->timer);
    r->timer_mode = T_NONE;
    r->closing = 3;
    uv_close((uv_handle_t *)&r->proc, handle_closed);
    uv_close((uv_handle_t *)&r->pipes[0], handle_closed);
    uv_close((uv_handle_t *)&r->pipes[1], handle_closed);
}

static void maybe_end(struct run *r)
{
    if (r->exited && r->eof[0] && r->eof[1] && r->closing == 0)
        close_command(r);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct run *r = h->data;
    int i = h == (uv_handle_t *)&r->pipes[0] ? 0 : 1;
    *buf = uv_buf_init(r->rbuf[i], READ_CHUNK);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct run *r = st->data;
    int i = st == (uv_stream_t *)&r->pipes[0] ? 0 : 1;
    if (nread > 0) {
        cap_append(&r->cap[i], buf->base, (size_t)nread);
    } else if (nread < 0) {
        uv_read_stop(st);
        r->eof[i] = true;
        maybe_end(r);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct run *r = t->data;
    if (r->timer_mode == T_KILL && r->live) {
        kill(-r->pid, SIGKILL);
    } else if (r->timer_mode == T_DRAIN) {
        /* a descendant that left the group still holds a pipe: stop waiting */
        for (int i = 0; i < 2; i++)
            if (!r->eof[i]) {
                uv_read_stop((uv_stream_t *)&r->pipes[i]);
                r->eof[i] = true;
            }
        maybe_end(r);
    }
}

static void proc_exited(uv_process_t *p, int64_t status, int term_signal)
{
    struct run *r = p->data;
    r->live = false;
    r->exited = true;
    r->exit_status = status;
    r->term_signal = term_signal;
    /* what the command left running in its group ends with it */
    kill(-r->pid, SIGKILL);
    r->timer_mode = T_DRAIN;
    uv_timer_start(&r->timer, on_timer, DRAIN_MS, 0);
    maybe_end(r);
}

static void spawn_next(struct run *r)
{
    if (r->cancelled) {
        snprintf(r->s->errstr, sizeof(r->s->errstr), "cancelled");
        finish(r, TQ_ECANCELED);
        return;
    }
    if (r->next == json_array_size(r->cmds)) {
        finish(r, TQ_OK);
        return;
    }
    uv_loop_t *loop = r->s->loop;
    char **argv = argv_of(json_array_get(r->cmds, r->next));
    memset(r->cap, 0, sizeof(r->cap));   /* len and total only matter */
    r->eof[0] = r->eof[1] = false;
    r->exited = false;
    r->exit_status = 0;
    r->term_signal = 0;
    r->spawn_err = 0;
    uv_pipe_init(loop, &r->pipes[0], 0);
    uv_pipe_init(loop, &r->pipes[1], 0);
    r->pipes[0].data = r->pipes[1].data = r;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->pipes[0]},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&r->pipes[1]},
    };
    uv_process_options_t opt = {
        .exit_cb = proc_exited,
        .file = argv[0],
        .args = argv,
        .env = r->env,
        .cwd = r->cwd,
        .flags = UV_PROCESS_DETACHED,   /* setsid: the command leads its own group */
        .stdio_count = 3,
        .stdio = stdio,
    };
    r->proc.data = r;
    r->t0_ns = wk_now_ns();
    cloexec_all();
    int rc = uv_spawn(loop, &r->proc, &opt);
    strv_free(argv);
    if (rc != 0) {
        /* the handles exist even when the spawn failed: close them first */
        r->spawn_err = rc;
        r->exited = true;
        close_command(r);
        return;
    }
    r->pid = r->proc.pid;
    r->live = true;
    uv_read_start((uv_stream_t *)&r->pipes[0], on_alloc, on_read);
    uv_read_start((uv_stream_t *)&r->pipes[1], on_alloc, on_read);
}

/* Thread pool: the working directory and the files the commands read. */
static void setup_work(uv_work_t *w)
{
    struct run *r = w->data;
    struct wk_step *s = r->s;
    enum tq_err err = TQ_OK;
    if (r->scratch) {
        const char *base = r->cwd;   /* the base until mkdtemp names the run's own */
        err = make_dir(s, base);
        if (!err) {
            char *tmpl = tq_xasprintf("%s/tq-%s-XXXXXX", base, s->claim->tenant_id);
            if (mkdtemp(tmpl)) {
                free(r->cwd);
                r->cwd = tmpl;
            } else {
                snprintf(s->errstr, sizeof(s->errstr), "could not create scratch space in"
                         " \"%s\": %s", base, strerror(errno));
                free(tmpl);
                free(r->cwd);
                r->cwd = NULL;   /* nothing to remove */
                err = TQ_EIO;
            }
        } else {
            free(r->cwd);
            r->cwd = NULL;
        }
    } else {
        err = make_dir(s, r->cwd);
    }
    if (!err)
        err = write_files(s, r->cwd);
    if (!err && r->tf_backend)
        err = write_backend(s, r->cwd);
    r->setup_err = err;
}

static void setup_after(uv_work_t *w, int status)
{
    struct run *r = w->data;
    (void)status;
    if (r->setup_err) {
        finish(r, r->setup_err);
        return;
    }
    spawn_next(r);   /* a cancel meanwhile is seen there */
}

static enum tq_err exec_start(struct wk_step *s)
{
    bool invalid;
    json_t *cmds = commands(s, &invalid);
    if (!cmds) {
        if (invalid)
            return TQ_EINVALID;
        json_object_set_new(s->output, "commands", json_array());
        wk_step_done(s, TQ_OK);   /* no undo commands: nothing to undo */
        return TQ_OK;
    }
    const json_t *c = json_object_get(s->params, "cwd");
    if (c && (!json_is_string(c) || json_string_value(c)[0] != '/')) {
        snprintf(s->errstr, sizeof(s->errstr), "params.cwd must be an absolute path");
        json_decref(cmds);
        return TQ_EINVALID;
    }
    const json_t *tb = json_object_get(s->params, "terraform_backend");
    const char *pg_conn = NULL;
    if (tb) {
        if (!json_is_string(tb) || strcmp(json_string_value(tb), "pg") != 0) {
            snprintf(s->errstr, sizeof(s->errstr),
                     "params.terraform_backend must be \"pg\" (Terraform state in PostgreSQL)");
            json_decref(cmds);
            return TQ_EINVALID;
        }
        pg_conn = s->set->terraform_pg_url;
        if (!pg_conn || !*pg_conn) {
            snprintf(s->errstr, sizeof(s->errstr),
                     "params.terraform_backend \"pg\" needs TQ_TERRAFORM_PG_URL in the worker's"
                     " environment (the connection string of Terraform's state database)");
            json_decref(cmds);
            return TQ_EINVALID;
        }
    }
    char *cwd;
    if (c) {
        cwd = tq_xstrdup(json_string_value(c));
    } else {
        const char *base = s->set->work_dir;
        cwd = tq_xstrdup(base && *base == '/' ? base : DEFAULT_WORK_DIR);
    }
    char **env = make_env(s, cwd, pg_conn);
    if (!env) {
        free(cwd);
        json_decref(cmds);
        return TQ_EINVALID;
    }
    struct run *r = tq_xcalloc(1, sizeof(*r));
    r->s = s;
    r->env = env;
    r->cwd = cwd;
    r->cmds = cmds;
    r->results = json_array();
    r->scratch = c == NULL;
    r->tf_backend = tb != NULL;
    r->remove_cwd = !r->scratch && s->undo &&
                    json_is_true(json_object_get(s->params, "remove_cwd_on_undo")) &&
                    strcmp(cwd, "/") != 0;
    uv_timer_init(s->loop, &r->timer);
    r->timer.data = r;
    s->kind_data = r;
    /* directories and files off the loop thread; the commands start after */
    r->work.data = r;
    uv_queue_work(s->loop, &r->work, setup_work, setup_after);
    return TQ_OK;
}

static void exec_cancel(struct wk_step *s)
{
    struct run *r = s->kind_data;
    if (!r || r->finishing || r->cancelled)
        return;
    r->cancelled = true;
    if (r->live) {
        kill(-r->pid, SIGTERM);
        r->timer_mode = T_KILL;
        uv_timer_start(&r->timer, on_timer, KILL_GRACE_MS, 0);
    }
    /* not live: the command is closing and spawn_next sees the cancel */
}

const struct wk_step_ops wk_step_exec = {"exec", exec_start, exec_cancel};
