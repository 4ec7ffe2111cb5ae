#!/usr/bin/env bash
# A round trip through walsync: mount, write with the sqlite3 shell, stop
# (flush), restore from the file:// replica and compare with the source.
set -euo pipefail
bin=$(realpath "${1:-bin/walsync}")
dir=$(mktemp -d /tmp/walsync-demo.XXXXXX)
mkdir -p "$dir/mnt"
"$bin" mount "$dir/mnt" --data "$dir/data" --replica "file://$dir/replica" &
pid=$!
trap 'kill $pid 2>/dev/null || true; umount -l "$dir/mnt" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q " $dir/mnt " /proc/self/mountinfo && break; sleep 0.1; done
mkdir -p "$dir/mnt/tenant42"
sqlite3 "$dir/mnt/tenant42/app.db" <<'SQL'
PRAGMA journal_mode=WAL;
CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
INSERT INTO notes(body) VALUES ('first'), ('second');
INSERT INTO notes(body) VALUES ('third');
SQL
sqlite3 "$dir/mnt/tenant42/app.db" .dump > "$dir/source.sql"
kill -INT $pid; wait $pid
echo "replica files:"; (cd "$dir/replica" && find . -type f | sort)
"$bin" restore "file://$dir/replica/tenant42/app.db" -o "$dir/restored.db"
sqlite3 "$dir/restored.db" .dump > "$dir/restored.sql"
"$bin" restore "file://$dir/replica/tenant42/app.db" -o "$dir/at2.db" --txid 2
if cmp -s "$dir/source.sql" "$dir/restored.sql"; then
  echo "restored database is identical to the source ($(sqlite3 "$dir/restored.db" 'PRAGMA integrity_check;'))"
  echo "at TXID 2 (table created, no rows yet): $(sqlite3 "$dir/at2.db" 'SELECT count(*) FROM notes;') rows"
else
  echo "restored database differs from the source" >&2; diff "$dir/source.sql" "$dir/restored.sql" >&2; exit 1
fi
rm -rf "$dir"
