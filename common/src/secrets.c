/*
 * The tenant credentials store (see tq/secrets.h; design in
 * docs/security.md): keyring parsing, AES-256-GCM sealing through OpenSSL
 * EVP, and the two back ends, tq.secrets rows and a laptop's file:DIR.
 * Key bytes and plaintexts are wiped (OPENSSL_cleanse) before they are freed.
 */
#include "tq/secrets.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tq/util.h"

#define MAX_KEYS 16
#define KEYFILE_MAX (64 * 1024)
#define FILE_SECRET_MAX (64 * 1024)

struct tq_key {
    char kid[TQ_SECRETS_KID_MAX + 1];
    unsigned char key[TQ_SECRETS_KEY_LEN];
};

struct tq_keyring {
    struct tq_key keys[MAX_KEYS];
    int n;
};

void tq_keyring_free(struct tq_keyring *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof(*k));
    free(k);
}

const char *tq_keyring_current(const struct tq_keyring *k)
{
    return k && k->n ? k->keys[0].kid : "";
}

static const struct tq_key *key_by_id(const struct tq_keyring *k, const char *kid)
{
    for (int i = 0; k && i < k->n; i++)
        if (strcmp(k->keys[i].kid, kid) == 0)
            return &k->keys[i];
    return NULL;
}

static bool kid_ok(const char *s, size_t n)
{
    if (n == 0 || n > TQ_SECRETS_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

/* Strict base64 of exactly 32 bytes (44 characters, one '=' of padding). */
static bool decode_key(const char *b64, size_t n, unsigned char out[TQ_SECRETS_KEY_LEN])
{
    if (n != 44 || b64[43] != '=' || b64[42] == '=')
        return false;
    for (size_t i = 0; i < 43; i++)
        if (!isalnum((unsigned char)b64[i]) && b64[i] != '+' && b64[i] != '/')
            return false;
    unsigned char buf[33 + 3];
    int got = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)n);
    bool ok = got == 33;   /* 44 chars -> 33 bytes, the last one is padding */
    if (ok)
        memcpy(out, buf, TQ_SECRETS_KEY_LEN);
    OPENSSL_cleanse(buf, sizeof(buf));
    return ok;
}

enum tq_err tq_keyring_parse(const char *text, struct tq_keyring **out, char *errbuf,
                             size_t errlen)
{
    *out = NULL;
    struct tq_keyring *k = tq_xcalloc(1, sizeof(*k));
    const char *p = text;
    int line = 0;
    while (*p) {
        size_t len = strcspn(p, "\n,");
        const char *next = p[len] ? p + len + 1 : p + len;
        line++;
        /* trim */
        while (len && isspace((unsigned char)*p))
            p++, len--;
        while (len && isspace((unsigned char)p[len - 1]))
            len--;
        if (len == 0 || *p == '#') {
            p = next;
            continue;
        }
        const char *colon = memchr(p, ':', len);
        if (!colon) {
            snprintf(errbuf, errlen, "key %d: must be KID:BASE64 (no ':' found)", line);
            goto bad;
        }
        size_t klen = (size_t)(colon - p);
        if (!kid_ok(p, klen)) {
            snprintf(errbuf, errlen,
                     "key %d: the key id must be 1-%d characters of A-Z a-z 0-9 . _ -", line,
                     TQ_SECRETS_KID_MAX);
            goto bad;
        }
        if (k->n == MAX_KEYS) {
            snprintf(errbuf, errlen, "key %d: at most %d keys", line, MAX_KEYS);
            goto bad;
        }
        struct tq_key *key = &k->keys[k->n];
        memcpy(key->kid, p, klen);
        key->kid[klen] = '\0';
        if (key_by_id(k, key->kid)) {
            snprintf(errbuf, errlen, "key %d: key id \"%s\" appears twice", line, key->kid);
            goto bad;
        }
        if (!decode_key(colon + 1, len - klen - 1, key->key)) {
            snprintf(errbuf, errlen,
                     "key %d (\"%s\"): the key must be exactly 32 bytes in base64 (44 "
                     "characters, e.g. from `head -c 32 /dev/urandom | base64`)",
                     line, key->kid);
            goto bad;
        }
        k->n++;
        p = next;
    }
    if (k->n == 0) {
        snprintf(errbuf, errlen, "no key found (expected lines KID:BASE64)");
        goto bad;
    }
    *out = k;
    return TQ_OK;
bad:
    tq_keyring_free(k);
    return TQ_EINVALID;
}

enum tq_err tq_keyring_from_vars(const char *var, const char *file_var, struct tq_keyring **out,
                                 char *errbuf, size_t errlen)
{
    *out = NULL;
    const char *inline_key = getenv(var);
    const char *file = getenv(file_var);
    bool has_inline = inline_key && *inline_key, has_file = file && *file;
    if (has_inline && has_file) {
        snprintf(errbuf, errlen, "%s and %s: set only one", var, file_var);
        return TQ_EINVALID;
    }
    char why[200];
    if (has_inline) {
        if (tq_keyring_parse(inline_key, out, why, sizeof(why))) {
            snprintf(errbuf, errlen, "%s: %s", var, why);
            return TQ_EINVALID;
        }
        return TQ_OK;
    }
    if (!has_file)
        return TQ_OK;
    char *text = NULL;
    size_t len = 0;
    if (tq_read_file(file, KEYFILE_MAX, &text, &len)) {
        snprintf(errbuf, errlen, "%s: cannot read \"%s\": %s", file_var, file,
                 strerror(errno));
        return TQ_EINVALID;
    }
    enum tq_err err = TQ_OK;
    if (strlen(text) != len) {
        snprintf(errbuf, errlen, "%s: \"%s\" contains a NUL byte", file_var, file);
        err = TQ_EINVALID;
    } else if (tq_keyring_parse(text, out, why, sizeof(why))) {
        snprintf(errbuf, errlen, "%s \"%s\": %s", file_var, file, why);
        err = TQ_EINVALID;
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return err;
}

enum tq_err tq_keyring_from_env(struct tq_keyring **out, char *errbuf, size_t errlen)
{
    return tq_keyring_from_vars("TQ_SECRETS_KEY", "TQ_SECRETS_KEY_FILE", out, errbuf, errlen);
}

int tq_keyring_size(const struct tq_keyring *k)
{
    return k ? k->n : 0;
}

const char *tq_keyring_key_at(const struct tq_keyring *k, int i,
                              const unsigned char **key)
{
    if (!k || i < 0 || i >= k->n)
        return NULL;
    *key = k->keys[i].key;
    return k->keys[i].kid;
}

void tq_sealed_cleanup(struct tq_sealed *s)
{
    free(s->ct);
    memset(s, 0, sizeof(*s));
}

/* AAD binds a ciphertext to its row: tenant, NUL, name. */
static unsigned char *make_aad(const char *tenant, const char *name, int *len)
{
    size_t a = strlen(tenant), b = strlen(name);
    unsigned char *aad = tq_xmalloc(a + 1 + b);
    memcpy(aad, tenant, a);
    aad[a] = 0;
    memcpy(aad + a + 1, name, b);
    *len = (int)(a + 1 + b);
    return aad;
}

enum tq_err tq_secret_seal(const struct tq_keyring *k, const char *tenant, const char *name,
                           const void *plain, size_t len, struct tq_sealed *out,
                           char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!k || k->n == 0) {
        snprintf(errbuf, errlen, "cannot encrypt: no secrets key is configured");
        return TQ_EINVALID;
    }
    if (len > FILE_SECRET_MAX) {
        snprintf(errbuf, errlen, "cannot encrypt: secret of %zu bytes is too large", len);
        return TQ_EINVALID;
    }
    const struct tq_key *key = &k->keys[0];
    if (tq_random_bytes(out->nonce, sizeof(out->nonce))) {
        snprintf(errbuf, errlen, "could not read the OS random source");
        return TQ_EIO;
    }
    snprintf(out->kid, sizeof(out->kid), "%s", key->kid);
    out->ct = tq_xmalloc(len + TQ_SECRETS_TAG_LEN);
    int aadlen, n = 0, fin = 0;
    unsigned char *aad = make_aad(tenant, name, &aadlen);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, TQ_SECRETS_NONCE_LEN, NULL) == 1 &&
              EVP_EncryptInit_ex(ctx, NULL, NULL, key->key, out->nonce) == 1 &&
              EVP_EncryptUpdate(ctx, NULL, &n, aad, aadlen) == 1 &&
              EVP_EncryptUpdate(ctx, out->ct, &n, plain, (int)len) == 1 &&
              EVP_EncryptFinal_ex(ctx, out->ct + n, &fin) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TQ_SECRETS_TAG_LEN,
                                  out->ct + n + fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    free(aad);
    if (!ok) {
        tq_sealed_cleanup(out);
        snprintf(errbuf, errlen, "could not encrypt the secret (OpenSSL AES-256-GCM failed)");
        return TQ_EIO;
    }
    out->ct_len = (size_t)(n + fin) + TQ_SECRETS_TAG_LEN;
    return TQ_OK;
}

enum tq_err tq_secret_unseal(const struct tq_keyring *k, const char *tenant, const char *name,
                             const struct tq_sealed *in, char **plain, size_t *len,
                             char *errbuf, size_t errlen)
{
    *plain = NULL;
    *len = 0;
    const struct tq_key *key = key_by_id(k, in->kid);
    if (!key) {
        snprintf(errbuf, errlen,
                 "cannot decrypt secret %s of tenant %s: key id \"%s\" is not in the keyring "
                 "(TQ_SECRETS_KEY / TQ_SECRETS_KEY_FILE)",
                 name, tenant, in->kid);
        return TQ_EINVALID;
    }
    if (in->ct_len < TQ_SECRETS_TAG_LEN) {
        snprintf(errbuf, errlen,
                 "cannot decrypt secret %s of tenant %s: failed authentication (ciphertext "
                 "too short: the row was altered)",
                 name, tenant);
        return TQ_EINVALID;
    }
    size_t clen = in->ct_len - TQ_SECRETS_TAG_LEN;
    char *out = tq_xmalloc(clen + 1);
    unsigned char tag[TQ_SECRETS_TAG_LEN];
    memcpy(tag, in->ct + clen, sizeof(tag));
    int aadlen, n = 0, fin = 0;
    unsigned char *aad = make_aad(tenant, name, &aadlen);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    bool ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, TQ_SECRETS_NONCE_LEN, NULL) == 1 &&
              EVP_DecryptInit_ex(ctx, NULL, NULL, key->key, in->nonce) == 1 &&
              EVP_DecryptUpdate(ctx, NULL, &n, aad, aadlen) == 1 &&
              EVP_DecryptUpdate(ctx, (unsigned char *)out, &n, in->ct, (int)clen) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TQ_SECRETS_TAG_LEN, tag) == 1 &&
              EVP_DecryptFinal_ex(ctx, (unsigned char *)out + n, &fin) == 1;
    EVP_CIPHER_CTX_free(ctx);
    free(aad);
    if (!ok) {
        OPENSSL_cleanse(out, clen + 1);
        free(out);
        snprintf(errbuf, errlen,
                 "cannot decrypt secret %s of tenant %s: failed authentication (the row was "
                 "altered, or sealed for another tenant, name or key)",
                 name, tenant);
        return TQ_EINVALID;
    }
    out[n + fin] = '\0';
    *plain = out;
    *len = (size_t)(n + fin);
    return TQ_OK;
}

/* ------------------------------------------------------------ the store */

struct tq_secrets {
    bool file;
    char *dir;          /* file:DIR */
    char *desc;
    struct tq_keyring *kr;
};

void tq_secrets_free(struct tq_secrets *s)
{
    if (!s)
        return;
    free(s->dir);
    free(s->desc);
    tq_keyring_free(s->kr);
    free(s);
}

bool tq_secrets_is_file(const struct tq_secrets *s)
{
    return s && s->file;
}

const char *tq_secrets_describe(const struct tq_secrets *s)
{
    return s ? s->desc : "none";
}

enum tq_err tq_secrets_open(const char *spec, bool have_database, struct tq_keyring *kr,
                            struct tq_secrets **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (!spec || !*spec) {
        if (!have_database) {
            tq_keyring_free(kr);
            snprintf(errbuf, errlen,
                     "TQ_SECRETS_STORE: no database is configured; set it to file:DIR");
            return TQ_EINVALID;
        }
        spec = "pg";
    }
    struct tq_secrets *s = tq_xcalloc(1, sizeof(*s));
    if (strcmp(spec, "pg") == 0) {
        if (!kr) {
            snprintf(errbuf, errlen,
                     "TQ_SECRETS_STORE=pg needs a key: set TQ_SECRETS_KEY or TQ_SECRETS_KEY_FILE "
                     "(lines KID:BASE64-OF-32-BYTES, the first is current)");
            free(s);
            return TQ_EINVALID;
        }
        s->desc = tq_xstrdup("pg");
    } else if (strncmp(spec, "file:", 5) == 0 && spec[5] == '/') {
        s->file = true;
        s->dir = tq_xstrdup(spec + 5);
        s->desc = tq_xstrdup(spec);
    } else {
        tq_keyring_free(kr);
        free(s);
        snprintf(errbuf, errlen,
                 "TQ_SECRETS_STORE: must be \"pg\" or \"file:DIR\" with DIR an absolute path");
        return TQ_EINVALID;
    }
    s->kr = kr;
    *out = s;
    return TQ_OK;
}

enum tq_err tq_secrets_from_env(bool have_database, struct tq_secrets **out, char *errbuf,
                                size_t errlen)
{
    struct tq_keyring *kr = NULL;
    enum tq_err err = tq_keyring_from_env(&kr, errbuf, errlen);
    if (err)
        return err;
    return tq_secrets_open(getenv("TQ_SECRETS_STORE"), have_database, kr, out, errbuf, errlen);
}

/* ---- file:DIR ---- */

static bool name_ok(const char *s)
{
    /* tenant ids and secret names become path parts: no '/', no dot files */
    if (!*s || *s == '.' || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return false;
    return true;
}

static enum tq_err check_names(const char *tenant, const char *name, char *errbuf, size_t errlen)
{
    if (!name_ok(tenant) || (name && !name_ok(name))) {
        snprintf(errbuf, errlen, "cannot use a secret name or tenant id with '/' or a leading '.'");
        return TQ_EINVALID;
    }
    return TQ_OK;
}

static enum tq_err file_put(struct tq_secrets *s, const char *tenant, const char *name,
                            const char *text, char *errbuf, size_t errlen)
{
    char *tdir = tq_xasprintf("%s/%s", s->dir, tenant);
    char *path = tq_xasprintf("%s/%s", tdir, name);
    char *tmp = tq_xasprintf("%s/.%s.tmp", tdir, name);
    enum tq_err err = TQ_OK;
    if ((mkdir(s->dir, 0700) != 0 && errno != EEXIST) ||
        (mkdir(tdir, 0700) != 0 && errno != EEXIST)) {
        snprintf(errbuf, errlen, "could not create \"%s\": %s", tdir, strerror(errno));
        err = TQ_EIO;
        goto out;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || fchmod(fd, 0600) != 0) {
        snprintf(errbuf, errlen, "could not write \"%s\": %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        err = TQ_EIO;
        goto out;
    }
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(errbuf, errlen, "could not write \"%s\": %s", path, strerror(ok ? errno : saved));
        unlink(tmp);
        err = TQ_EIO;
    }
out:
    free(tdir);
    free(path);
    free(tmp);
    return err;
}

static enum tq_err file_get(struct tq_secrets *s, const char *tenant, const char *name,
                            char **text, size_t *len, char *errbuf, size_t errlen)
{
    char *path = tq_xasprintf("%s/%s/%s", s->dir, tenant, name);
    enum tq_err err = TQ_OK;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        snprintf(errbuf, errlen, "cannot read secret %s of tenant %s: \"%s\" does not exist",
                 name, tenant, path);
        err = TQ_ENOTFOUND;
    } else if (tq_read_file(path, FILE_SECRET_MAX, text, len)) {
        snprintf(errbuf, errlen, "could not read \"%s\"", path);
        err = TQ_EIO;
    }
    free(path);
    return err;
}

static enum tq_err file_delete(struct tq_secrets *s, const char *tenant, const char *name,
                               char *errbuf, size_t errlen)
{
    char *tdir = tq_xasprintf("%s/%s", s->dir, tenant);
    enum tq_err err = TQ_OK;
    if (name) {
        char *path = tq_xasprintf("%s/%s", tdir, name);
        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(errbuf, errlen, "could not remove \"%s\": %s", path, strerror(errno));
            err = TQ_EIO;
        }
        free(path);
    } else {
        DIR *d = opendir(tdir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *path = tq_xasprintf("%s/%s", tdir, e->d_name);
            if (unlink(path) != 0 && errno != ENOENT && !err) {
                snprintf(errbuf, errlen, "could not remove \"%s\": %s", path, strerror(errno));
                err = TQ_EIO;
            }
            free(path);
        }
        if (d)
            closedir(d);
    }
    rmdir(tdir);   /* goes with its last file; ENOTEMPTY keeps it */
    free(tdir);
    return err;
}

/* ---- pg ---- */

static enum tq_err pg_failed(PGconn *db, PGresult *r, const char *what, char *errbuf,
                             size_t errlen)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    bool denied = state && strcmp(state, "42501") == 0;
    snprintf(errbuf, errlen, "%s %s: %s%s", denied ? "cannot" : "could not", what,
             msg ? msg : PQerrorMessage(db),
             denied ? " (this database role may not; see docs/security.md)" : "");
    errbuf[strcspn(errbuf, "\n")] = '\0';
    PQclear(r);
    /* a refused privilege will not change on retry */
    return denied ? TQ_EINVALID : PQstatus(db) == CONNECTION_OK ? TQ_EPG : TQ_ECONNECT;
}

static enum tq_err pg_put_sealed(PGconn *db, const char *tenant, const char *name,
                                 const struct tq_sealed *sl, const char *only_kid,
                                 char *errbuf, size_t errlen)
{
    const char *vals[6] = {tenant, name, sl->kid, (const char *)sl->nonce, (const char *)sl->ct,
                           only_kid};
    int lens[6] = {0, 0, 0, TQ_SECRETS_NONCE_LEN, (int)sl->ct_len, 0};
    int fmts[6] = {0, 0, 0, 1, 1, 0};
    PGresult *r = PQexecParams(
        db,
        only_kid ? "UPDATE tq.secrets SET key_id = $3, nonce = $4, ciphertext = $5,"
                   " updated_at = now() WHERE tenant_id = $1 AND name = $2 AND key_id = $6"
                 : "INSERT INTO tq.secrets (tenant_id, name, key_id, nonce, ciphertext)"
                   " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, name) DO UPDATE"
                   " SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,"
                   " ciphertext = EXCLUDED.ciphertext, updated_at = now()",
        only_kid ? 6 : 5, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return pg_failed(db, r, "store the secret", errbuf, errlen);
    PQclear(r);
    return TQ_OK;
}

/* Fill sl from row i of r (columns: key_id, nonce, ciphertext in binary). */
static enum tq_err row_sealed(PGresult *r, int i, int col, struct tq_sealed *sl, char *errbuf,
                              size_t errlen)
{
    memset(sl, 0, sizeof(*sl));
    snprintf(sl->kid, sizeof(sl->kid), "%s", PQgetvalue(r, i, col));
    if (PQgetlength(r, i, col + 1) != TQ_SECRETS_NONCE_LEN) {
        snprintf(errbuf, errlen, "failed authentication: the stored nonce has %d bytes, not %d "
                 "(the row was altered)", PQgetlength(r, i, col + 1), TQ_SECRETS_NONCE_LEN);
        return TQ_EINVALID;
    }
    memcpy(sl->nonce, PQgetvalue(r, i, col + 1), TQ_SECRETS_NONCE_LEN);
    sl->ct_len = (size_t)PQgetlength(r, i, col + 2);
    sl->ct = tq_xmalloc(sl->ct_len + 1);
    memcpy(sl->ct, PQgetvalue(r, i, col + 2), sl->ct_len);
    return TQ_OK;
}

/* Decrypt row i and parse its JSON object; *out owned by the caller. */
static enum tq_err row_json(struct tq_secrets *s, PGresult *r, int i, int col,
                            const char *tenant, const char *name, json_t **out, char *errbuf,
                            size_t errlen)
{
    struct tq_sealed sl;
    char *plain = NULL;
    size_t len = 0;
    char why[200];
    enum tq_err err = row_sealed(r, i, col, &sl, why, sizeof(why));
    if (err)
        snprintf(errbuf, errlen, "cannot decrypt secret %s of tenant %s: %s", name, tenant, why);
    else
        err = tq_secret_unseal(s->kr, tenant, name, &sl, &plain, &len, errbuf, errlen);
    tq_sealed_cleanup(&sl);
    if (err)
        return err;
    *out = json_loadb(plain, len, 0, NULL);
    OPENSSL_cleanse(plain, len);
    free(plain);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        snprintf(errbuf, errlen, "cannot parse secret %s of tenant %s", name, tenant);
        return TQ_EINVALID;
    }
    return TQ_OK;
}

/* ---- the operations ---- */

enum tq_err tq_secrets_put(struct tq_secrets *s, PGconn *db, const char *tenant,
                           const char *name, const json_t *value, char *errbuf, size_t errlen)
{
    enum tq_err err = check_names(tenant, name, errbuf, errlen);
    if (err)
        return err;
    char *text = json_dumps(value, JSON_COMPACT);
    if (!text) {
        snprintf(errbuf, errlen, "could not serialise secret %s", name);
        return TQ_EINVALID;
    }
    size_t len = strlen(text);
    if (s->file) {
        err = file_put(s, tenant, name, text, errbuf, errlen);
    } else {
        struct tq_sealed sl;
        err = tq_secret_seal(s->kr, tenant, name, text, len, &sl, errbuf, errlen);
        if (!err)
            err = pg_put_sealed(db, tenant, name, &sl, NULL, errbuf, errlen);
        tq_sealed_cleanup(&sl);
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return err;
}

enum tq_err tq_secrets_get(struct tq_secrets *s, PGconn *db, const char *tenant,
                           const char *name, json_t **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    enum tq_err err = check_names(tenant, name, errbuf, errlen);
    if (err)
        return err;
    if (s->file) {
        char *text = NULL;
        size_t len = 0;
        if ((err = file_get(s, tenant, name, &text, &len, errbuf, errlen)))
            return err;
        *out = json_loadb(text, len, 0, NULL);
        OPENSSL_cleanse(text, len);
        free(text);
        if (!json_is_object(*out)) {
            json_decref(*out);
            *out = NULL;
            snprintf(errbuf, errlen, "cannot parse secret %s of tenant %s", name, tenant);
            return TQ_EINVALID;
        }
        return TQ_OK;
    }
    const char *vals[2] = {tenant, name};
    PGresult *r = PQexecParams(db,
                               "SELECT key_id, nonce, ciphertext FROM tq.secrets"
                               " WHERE tenant_id = $1 AND name = $2",
                               2, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return pg_failed(db, r, "read the secret", errbuf, errlen);
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(errbuf, errlen, "cannot read secret %s of tenant %s: the store has none", name,
                 tenant);
        return TQ_ENOTFOUND;
    }
    err = row_json(s, r, 0, 0, tenant, name, out, errbuf, errlen);
    PQclear(r);
    return err;
}

enum tq_err tq_secrets_delete(struct tq_secrets *s, PGconn *db, const char *tenant,
                              const char *name, char *errbuf, size_t errlen)
{
    enum tq_err err = check_names(tenant, name, errbuf, errlen);
    if (err)
        return err;
    if (s->file)
        return file_delete(s, tenant, name, errbuf, errlen);
    const char *vals[2] = {tenant, name};
    PGresult *r = PQexecParams(db,
                               "DELETE FROM tq.secrets WHERE tenant_id = $1"
                               " AND ($2::text IS NULL OR name = $2)",
                               2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return pg_failed(db, r, "destroy the secret", errbuf, errlen);
    PQclear(r);
    return TQ_OK;
}

static enum tq_err exec_simple(PGconn *db, const char *sql, const char *what, char *errbuf,
                               size_t errlen)
{
    PGresult *r = PQexec(db, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        return pg_failed(db, r, what, errbuf, errlen);
    PQclear(r);
    return TQ_OK;
}

enum tq_err tq_secrets_rotate(struct tq_secrets *s, PGconn *db, int *rotated, char *errbuf,
                              size_t errlen)
{
    *rotated = 0;
    if (s->file) {
        snprintf(errbuf, errlen, "cannot rotate: the file store (%s) is not encrypted", s->desc);
        return TQ_EINVALID;
    }
    enum tq_err err = exec_simple(db, "BEGIN", "begin", errbuf, errlen);
    if (err)
        return err;
    const char *cur = tq_keyring_current(s->kr);
    const char *vals[1] = {cur};
    PGresult *r = PQexecParams(db,
                               "SELECT tenant_id, name, key_id, nonce, ciphertext FROM tq.secrets"
                               " WHERE key_id <> $1 ORDER BY tenant_id, name FOR UPDATE",
                               1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        err = pg_failed(db, r, "read the secrets to rotate", errbuf, errlen);
        r = NULL;
        goto fail;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *tenant = PQgetvalue(r, i, 0), *name = PQgetvalue(r, i, 1);
        struct tq_sealed old, fresh;
        char *plain = NULL;
        size_t len = 0;
        char why[200];
        if ((err = row_sealed(r, i, 2, &old, why, sizeof(why)))) {
            snprintf(errbuf, errlen, "cannot rotate secret %s of tenant %s: %s", name, tenant,
                     why);
            tq_sealed_cleanup(&old);
            goto fail;
        }
        err = tq_secret_unseal(s->kr, tenant, name, &old, &plain, &len, errbuf, errlen);
        if (!err)
            err = tq_secret_seal(s->kr, tenant, name, plain, len, &fresh, errbuf, errlen);
        if (plain) {
            OPENSSL_cleanse(plain, len);
            free(plain);
        }
        if (!err) {
            err = pg_put_sealed(db, tenant, name, &fresh, old.kid, errbuf, errlen);
            tq_sealed_cleanup(&fresh);
        }
        tq_sealed_cleanup(&old);
        if (err)
            goto fail;
        (*rotated)++;
    }
    PQclear(r);
    return exec_simple(db, "COMMIT", "commit the rotation", errbuf, errlen);
fail:
    PQclear(r);
    PQclear(PQexec(db, "ROLLBACK"));
    *rotated = 0;
    return err;
}

enum tq_err tq_secrets_owner_read(struct tq_secrets *s, PGconn *db, const char *tenant,
                                  const char *actor, json_t **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (s->file) {
        snprintf(errbuf, errlen,
                 "cannot deliver credentials from the file store (%s): it is one host's disk",
                 s->desc);
        return TQ_EINVALID;
    }
    const char *vals[2] = {tenant, actor};
    PGresult *r = PQexecParams(db,
                               "SELECT name, key_id, nonce, ciphertext"
                               " FROM tq.tenant_credentials($1, $2)",
                               2, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        return pg_failed(db, r, "read the tenant's credentials", errbuf, errlen);
    if (PQntuples(r) == 0) {
        PQclear(r);
        snprintf(errbuf, errlen,
                 "no credentials for tenant %s (it does not exist, is not active, or has none)",
                 tenant);
        return TQ_ENOTFOUND;
    }
    json_t *all = json_object();
    enum tq_err err = TQ_OK;
    for (int i = 0; i < PQntuples(r) && !err; i++) {
        const char *name = PQgetvalue(r, i, 0);
        json_t *v = NULL;
        if (!(err = row_json(s, r, i, 1, tenant, name, &v, errbuf, errlen)))
            json_object_set_new(all, name, v);
    }
    PQclear(r);
    if (err) {
        json_decref(all);
        return err;
    }
    *out = all;
    return TQ_OK;
}
