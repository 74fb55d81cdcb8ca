#!/usr/bin/env bash
# Profiles every process during a benchmark scenario (docs/performance.md, "Where the CPU goes").
# Runs ./bench.sh --only <scenario> with its results kept out of docs/, waits until the
# end-to-end part has started (the raw hops come first), records every CPU with perf for a few
# seconds, then prints each process's share of the samples and its hottest functions.
#
# Usage: scripts/profile-bench.sh [scenario, default e2e_throughput] [functions per process, 25]
# Environment: PROFILE_DELAY (seconds after the raw hops, default 4), PROFILE_SECS (default 8),
# PROFILE_OUT (directory for perf.data, the process list and the report; default a temp dir),
# PROFILE_CALLERS ("gateway", "worker", "recorder": instead of every CPU, record that one
# process with call graphs, and report each function's share with what it calls).
# Needs perf (Debian's linux-perf) and permission to record every CPU (root, or
# kernel.perf_event_paranoid <= 0).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario="${1:-e2e_throughput}"
top="${2:-25}"
out="${PROFILE_OUT:-$(mktemp -d /tmp/wharf-profile.XXXXXX)}"
mkdir -p "$out"
command -v perf >/dev/null || { echo "perf is not installed (Debian: linux-perf)" >&2; exit 1; }

./bench.sh --only "$scenario" --out "$out/results.jsonl" --page "$out/results.md" >"$out/bench.log" 2>&1 &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT
# The end-to-end scenarios start after the raw hops, whose last line is the composed limit.
for _ in $(seq 2400); do
  grep -q '"composed_limit"\|"scenario":"raw_history"' "$out/bench.log" 2>/dev/null && break
  kill -0 "$bench" 2>/dev/null || { cat "$out/bench.log" >&2; exit 1; }
  sleep 0.5
done
sleep "${PROFILE_DELAY:-4}"
ps -eo pid=,args= >"$out/processes.txt"
if [ -n "${PROFILE_CALLERS:-}" ]; then
  pid="$(awk -v part="$PROFILE_CALLERS" '$2 ~ /\/wharf$/ && $3 == part { print $1; exit }' "$out/processes.txt")"
  [ -n "$pid" ] || { echo "no 'wharf $PROFILE_CALLERS' process is running" >&2; exit 1; }
  perf record -p "$pid" -F 199 --call-graph dwarf,32768 -o "$out/perf.data" -- sleep "${PROFILE_SECS:-8}" >"$out/perf.log" 2>&1
  wait "$bench"
  trap - EXIT
  perf report -i "$out/perf.data" --children --sort symbol --stdio --percent-limit 1.5 -g none 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | cut -c1-170 >"$out/report.txt"
  cat "$out/report.txt"
  echo "profile: $out (report.txt, perf.data, bench.log)" >&2
  exit 0
fi
perf record -a -F 499 -o "$out/perf.data" -- sleep "${PROFILE_SECS:-8}" >"$out/perf.log" 2>&1
wait "$bench"
trap - EXIT
perf script -i "$out/perf.data" -F comm,pid,ip,sym,dso 2>/dev/null >"$out/samples.txt"

python3 - "$out" "$top" <<'EOF'
import collections, re, sys
out, top = sys.argv[1], int(sys.argv[2])
names = {}
for line in open(f"{out}/processes.txt"):
    pid, _, args = line.strip().partition(" ")
    words = args.split()
    prog = words[0].rsplit("/", 1)[-1] if words else "?"
    names[pid] = f"wharf {words[1]}" if prog == "wharf" and len(words) > 1 else prog
samples = collections.Counter()
functions = collections.defaultdict(collections.Counter)
for line in open(f"{out}/samples.txt"):
    parts = line.split(None, 3)
    if len(parts) < 4:
        continue
    pid, rest = parts[1], parts[3]
    name = names.get(pid, "idle" if pid == "0" else f"pid {pid}")
    samples[name] += 1
    functions[name][re.sub(r"\+0x[0-9a-f]+", "", rest).strip()[:140]] += 1
total = sum(samples.values())
with open(f"{out}/report.txt", "w") as report:
    for name, n in samples.most_common():
        print(f"{name}: {n} samples, {100 * n / total:.1f} %", file=report)
        for fn, k in functions[name].most_common(top):
            print(f"  {100 * k / n:5.1f} %  {fn}", file=report)
print(open(f"{out}/report.txt").read())
EOF
echo "profile: $out (report.txt, perf.data, bench.log)" >&2
