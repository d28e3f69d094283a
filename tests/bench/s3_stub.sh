#!/usr/bin/env bash
# tests/bench/s3_stub.sh [BUCKETS] [SERVER]: per-request cost of the S3
# stand-in as buckets accumulate. Creates BUCKETS (1000) buckets, each with
# its tags (two signed requests, as the bucket step sends), against
# SERVER (tests/stubs/s3server.py) with --data, and prints the mean ms per
# bucket of the first and of the last 100. Prints numbers; asserts nothing.
set -euo pipefail
n=${1:-1000}
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
server=${2:-$here/stubs/s3server.py}
t=$(mktemp -d /tmp/tq-s3bench-XXXXXX)
key=AKIABENCH secret=bench-secret
python3 "$server" --port 0 --port-file "$t/port" --access-key "$key" --secret-key "$secret" \
  --quiet --data "$t/data" >"$t/out" 2>"$t/log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf -- "$t"' EXIT
for _ in $(seq 100); do [ -s "$t/port" ] && break; sleep 0.05; done
port=$(tr -d '\n' <"$t/port")
empty=$(printf '' | sha256sum | cut -d' ' -f1)
printf '<Tagging><TagSet><Tag><Key>TenantID</Key><Value>x</Value></Tag></TagSet></Tagging>' >"$t/tags"
tsha=$(sha256sum <"$t/tags" | cut -d' ' -f1)
tmd5=$(python3 -c 'import base64,hashlib,sys; print(base64.b64encode(hashlib.md5(open(sys.argv[1],"rb").read()).digest()).decode())' "$t/tags")
sign=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$key:$secret")
first=0 last=0
for i in $(seq 1 "$n"); do
  s=$(date +%s%N)
  curl -s -o /dev/null "${sign[@]}" -H "x-amz-content-sha256: $empty" -X PUT "http://127.0.0.1:$port/rag-b$i-documents"
  curl -s -o /dev/null "${sign[@]}" -H "x-amz-content-sha256: $tsha" -H "Content-MD5: $tmd5" \
    --data-binary "@$t/tags" -X PUT "http://127.0.0.1:$port/rag-b$i-documents?tagging="
  e=$(( ($(date +%s%N) - s) / 1000 ))
  [ "$i" -le 100 ] && first=$((first + e))
  [ "$i" -gt $((n - 100)) ] && last=$((last + e))
done
printf 'buckets %d: first 100 %.1f ms/bucket, last 100 %.1f ms/bucket\n' "$n" \
  "$(echo "$first / 100000" | bc -l)" "$(echo "$last / 100000" | bc -l)"
