#!/usr/bin/env bash
# Benchmark of the slot guard (not run by test/check):
#
#   1. the cost of one check (its sampling transaction, through
#      dfe_airbyte_check_slots_now()): median ms, buffer accesses and catalog
#      blocks read, with an empty history, an hour and a week of samples;
#   2. the replication_slot_health view with 20 slots: mean ms and buffers,
#      same three histories (the view reads the last 7.5 sync intervals,
#      112 min by default, through slot_samples_sampled_at_idx: a week costs
#      what those 112 minutes cost, an hour's history has less to read), and
#      the slot_limit_advice view (two index lookups, whatever the history);
#   3. the worker's CPU while idle, utime+stime from /proc over --minutes N
#      (default 10), as a percentage of one core.
#
#   test/bench/slot_check.sh [--minutes N] [--interval SECONDS] [--runs N]
#
# As root it re-runs itself as an ordinary user in a copy of the tree, like
# test/check.  Prints the numbers side by side, with ratios.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
minutes=10
interval=10
runs=200
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes=$2; shift 2 ;;
        --interval) interval=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        *) echo "usage: $0 [--minutes N] [--interval SECONDS] [--runs N]" >&2; exit 2 ;;
    esac
done

. "$top/test/lib/as_test_user.sh"
dfe_reexec_as_test_user bench test/bench/slot_check.sh --minutes "$minutes" --interval "$interval" --runs "$runs"

cd "$top"
# measure the production build: no dfe_Assert() checks (src/dfe_assert.h)
export DFE_ASSERTS=0
bindir=$(test/tmp_install.sh "$top/tmp_install")
export PATH="$bindir:$PATH"
dir=$(mktemp -d /tmp/dfe_slot_bench.XXXXXX)
export PGDATA="$dir/data" PGHOST="$dir" PGPORT=$((20000 + RANDOM % 20000)) PGDATABASE=postgres
trap 'pg_ctl stop -m immediate >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

initdb -A trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$PGDATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'dfe_airbyte'
dfe_airbyte.database = 'postgres'
wal_level = logical
max_replication_slots = 30
dfe_airbyte.check_interval = ${interval}s
dfe_airbyte.max_slot_wal_size = 1GB
dfe_airbyte.history_max_rows = 5000000
CONF
pg_ctl -l "$dir/log" -w start >/dev/null
psql -qAt -c "CREATE EXTENSION dfe_airbyte" >/dev/null
psql -qAt -c "SELECT pg_create_logical_replication_slot('airbyte_slot', 'pgoutput')" >/dev/null
for i in $(seq 1 19); do
    psql -qAt -c "SELECT pg_create_logical_replication_slot('bench_slot_$i', 'pgoutput')" >/dev/null
done

# one check's sampling transaction, $runs times in one session (the first
# call prepares the statement; the median ignores it anyway)
check_cost() {
    { for _ in $(seq 1 "$runs"); do echo "SELECT elapsed_ms, buffers_hit + buffers_read FROM dfe_airbyte_check_slots_now();"; done; } |
        psql -qAt -F ' ' | sort -n | awk '{ ms[NR] = $1; buf += $2 } END { printf "%.3f %.1f\n", ms[int((NR + 1) / 2)], buf / NR }'
}

# catalog blocks touched per check: a session with 1 check and one with
# 1 + $runs checks; the difference over $runs is what each further check
# reads from pg_catalog (0 when the prepared statement and the caches do
# their job).  Stats reach pg_statio_* when a session ends.
catalog_blocks() {
    psql -qAt -c "SELECT pg_stat_force_next_flush()" >/dev/null
    sleep 1
    psql -qAt -c "SELECT sum(coalesce(heap_blks_hit, 0) + coalesce(heap_blks_read, 0) + coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0)) FROM pg_statio_sys_tables"
}
catalog_per_check() {
    local a b c
    a=$(catalog_blocks)
    psql -qAt -c "SELECT FROM dfe_airbyte_check_slots_now()" >/dev/null
    b=$(catalog_blocks)
    { for _ in $(seq 0 "$runs"); do echo "SELECT FROM dfe_airbyte_check_slots_now();"; done; } | psql -qAt >/dev/null
    c=$(catalog_blocks)
    # (c - b) - (b - a): the extra checks' catalog accesses, minus one session's
    # set-up and the catalog_blocks() queries themselves
    awk -v a="$a" -v b="$b" -v c="$c" -v n="$runs" 'BEGIN { printf "%.2f\n", ((c - b) - (b - a)) / n }'
}

# the view, $runs times in one statement: mean ms; plus one EXPLAIN
view_cost() {
    local view=${1:-dfe_airbyte.replication_slot_health}
    psql -qAt <<SQL
DO \$\$
DECLARE t0 timestamptz; n int := $runs;
BEGIN
    PERFORM * FROM $view;   -- warm-up
    t0 := clock_timestamp();
    FOR i IN 1..n LOOP
        PERFORM * FROM $view;
    END LOOP;
    RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - t0) * 1000 / n, 3);
END
\$\$;
SQL
}

view_explain() {
    psql -qAt -c "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM dfe_airbyte.replication_slot_health" |
        python3 -c '
import json, sys
plan = json.load(sys.stdin)[0]
def walk(n):
    yield n
    for c in n.get("Plans", []):
        yield from walk(c)
nodes = list(walk(plan["Plan"]))
idx = any(n.get("Index Name") == "slot_samples_sampled_at_idx" for n in nodes)
seq = any(n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == "slot_samples" for n in nodes)
top = plan["Plan"]
print("%d %s %s" % (top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
                    "index" if idx else "no-index", "seqscan" if seq else "no-seqscan"))'
}

echo "slot guard benchmark: 20 logical slots, $runs runs per measurement"
# the view first: the check measurements add $runs checks' worth of samples
# to the last hour, which the view reads
v0_ms=$(view_cost 2>&1 | sed -n 's/.*NOTICE:  //p')
a0_ms=$(view_cost dfe_airbyte.slot_limit_advice 2>&1 | sed -n 's/.*NOTICE:  //p')
read -r v0_buf v0_idx v0_seq < <(view_explain)
read -r c0_ms c0_buf < <(check_cost)
cat0=$(catalog_per_check)

# samples of the 20 slots every 10 s over the last $1, as the worker would
# have written them (in place of what the worker and the measurements wrote)
fill_history() {
    psql -qAt >/dev/null <<SQL
TRUNCATE dfe_airbyte.slot_samples;
INSERT INTO dfe_airbyte.slot_samples (sampled_at, slot_name, active, wal_status, retained_bytes, flush_lag_bytes, current_lsn)
SELECT t, s.slot_name, false, 'reserved', (extract(epoch FROM t - (now() - interval '$1')) * 100)::bigint, 0,
       '0/1000000'::pg_lsn + (extract(epoch FROM t - (now() - interval '$1')) * 1000)::numeric
FROM generate_series(now() - interval '$1', now() - interval '10 seconds', interval '10 seconds') t
CROSS JOIN (SELECT slot_name::text FROM pg_replication_slots) s;
UPDATE dfe_airbyte.slot_state SET first_seen_at = now() - interval '8 days';
VACUUM ANALYZE dfe_airbyte.slot_samples;
SQL
}

fill_history '1 hour'
vh_ms=$(view_cost 2>&1 | sed -n 's/.*NOTICE:  //p')
ah_ms=$(view_cost dfe_airbyte.slot_limit_advice 2>&1 | sed -n 's/.*NOTICE:  //p')
read -r vh_buf vh_idx vh_seq < <(view_explain)
read -r ch_ms ch_buf < <(check_cost)
cath=$(catalog_per_check)

# a week: 1.2 M rows
fill_history '7 days'
rows=$(psql -qAt -c "SELECT count(*) FROM dfe_airbyte.slot_samples")

v1_ms=$(view_cost 2>&1 | sed -n 's/.*NOTICE:  //p')
a1_ms=$(view_cost dfe_airbyte.slot_limit_advice 2>&1 | sed -n 's/.*NOTICE:  //p')
read -r v1_buf v1_idx v1_seq < <(view_explain)
read -r c1_ms c1_buf < <(check_cost)
cat1=$(catalog_per_check)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
printf '%-30s %10s %10s %18s %8s\n' "" "empty" "1 hour" "week ($rows rows)" "week/hour"
printf '%-30s %10s %10s %18s %8s\n' "one check: median ms" "$c0_ms" "$ch_ms" "$c1_ms" "$(ratio "$c1_ms" "$ch_ms")"
printf '%-30s %10s %10s %18s %8s\n' "one check: buffer accesses" "$c0_buf" "$ch_buf" "$c1_buf" "$(ratio "$c1_buf" "$ch_buf")"
printf '%-30s %10s %10s %18s\n' "one check: catalog blocks" "$cat0" "$cath" "$cat1"
printf '%-30s %10s %10s %18s %8s\n' "health view: mean ms" "$v0_ms" "$vh_ms" "$v1_ms" "$(ratio "$v1_ms" "$vh_ms")"
printf '%-30s %10s %10s %18s %8s\n' "health view: buffer accesses" "$v0_buf" "$vh_buf" "$v1_buf" "$(ratio "$v1_buf" "$vh_buf")"
printf '%-30s %10s %10s %18s\n' "health view: plan" "-" "$vh_idx" "$v1_idx/$v1_seq"
printf '%-30s %10s %10s %18s %8s\n' "limit advice view: mean ms" "$a0_ms" "$ah_ms" "$a1_ms" "$(ratio "$a1_ms" "$ah_ms")"
psql -qAt -c "SELECT 'growth estimate present for ' || count(growth_bytes_per_hour) || ' of ' || count(*) || ' slots' FROM dfe_airbyte.replication_slot_health"

# worker CPU while idle (nothing but its checks every $interval s)
pid=$(psql -qAt -c "SELECT pid FROM dfe_airbyte.workers WHERE worker = 'guard'")
tck=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
a=$(cpu); t0=$(date +%s.%N)
sleep $((minutes * 60))
b=$(cpu); t1=$(date +%s.%N)
checks=$(psql -qAt -c "SELECT count(DISTINCT sampled_at) FROM dfe_airbyte.slot_samples WHERE sampled_at > to_timestamp($t0)")
awk -v a="$a" -v b="$b" -v t0="$t0" -v t1="$t1" -v tck="$tck" -v n="$checks" -v m="$minutes" -v iv="$interval" 'BEGIN {
    cpu = (b - a) / tck; wall = t1 - t0;
    printf "worker CPU over %d min idle (check_interval %ds, %d checks): %.2f s = %.4f%% of one core, %.2f ms per check\n",
        m, iv, n, cpu, 100 * cpu / wall, (n > 0 ? 1000 * cpu / n : 0) }'
