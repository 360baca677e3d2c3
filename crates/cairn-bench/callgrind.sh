#!/usr/bin/env bash
# Instructions the server executes per request, counted by valgrind's
# callgrind: the same count for the same binary and inputs whatever else
# the machine is doing, so two edge stacks (or two builds) compare where
# throughput runs on a shared 2-core VM spread by 30% (docs/PERFORMANCE.md
# "The edge stack").
#
#   crates/cairn-bench/callgrind.sh STACK SCENARIO REQUESTS [SERVER_BIN]
#
# STACK is cairn-bench's --stack (bare, as-is, full); SCENARIO is create,
# get or list. cairn-bench starts the server under callgrind with
# instrumentation off, makes the events a get or list needs, switches
# instrumentation on and only then lets the measured scenario start
# (`--start-gate`), sends REQUESTS requests at its usual concurrency and
# stops the server; the count covers that scenario and the shutdown.
# Prints instructions per request and leaves the profile (for
# callgrind_annotate) in $CALLGRIND_OUT_DIR (default: a new temp dir).
# CALLGRIND_COUNT=bench counts the load generator instead (the server runs
# natively): what a client pays to send each request and read its answer.
# Extra cairn-bench arguments may be given in $BENCH_ARGS (e.g.
# BENCH_ARGS="--names 30": with 3000 creates, every list is a full page).
# Needs valgrind and: cargo build --release -p cairn -p cairn-bench
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
stack=$1 scenario=$2 requests=$3
target=${CARGO_TARGET_DIR:-target}
bench="$target/release/cairn-bench"
server=$(realpath "${4:-$target/release/cairn}")
out=${CALLGRIND_OUT_DIR:-$(mktemp -d)}
mkdir -p "$out"
case $scenario in
  create) scenarios=create; starts="running: create" ;;
  get) scenarios=create,get; starts="running: get" ;;
  list) scenarios=create,list; starts="running: list" ;;
  *) echo "scenario must be create, get or list" >&2; exit 2 ;;
esac
tag="$stack-$scenario-$$"
counted=${CALLGRIND_COUNT:-server}
callgrind=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no
  "--callgrind-out-file=$out/callgrind.$tag")
case $counted in
  server)
    # The bench starts the server through this wrapper.
    run=("$bench")
    server_bin="$out/server-$tag.sh"
    { echo '#!/usr/bin/env bash'; printf 'exec'; printf ' %q' "${callgrind[@]}" "$server"
      echo ' "$@"'; } >"$server_bin"
    chmod +x "$server_bin" ;;
  bench) run=("${callgrind[@]}" "$bench") server_bin=$server ;;
  *) echo "CALLGRIND_COUNT must be server or bench" >&2; exit 2 ;;
esac

# Measured scenario: a fixed number of requests, no warm-up, no time limit.
# The bench holds it back until the gate file exists, which is made only
# once the count is on: every request of the scenario is counted.
gate="$out/gate-$tag"
rm -f "$gate"
"${run[@]}" --server-bin "$server_bin" --stack "$stack" --scenarios "$scenarios" \
  --concurrency 64 --get-concurrency 64 --list-concurrency 16 \
  --max-requests "$requests" --warmup-secs 0 --duration-secs 100000 \
  --start-gate "$gate" ${BENCH_ARGS:-} \
  2>&1 >"$out/bench-$tag.log" | while IFS= read -r line; do
  echo "$line" >>"$out/bench-$tag.log"
  case $line in *"$starts"*)
    pid=$(pgrep -f -- "--callgrind-out-file=$out/callgrind.$tag" | head -n1)
    if ! callgrind_control --instr=on "$pid" >/dev/null 2>&1; then
      echo "could not switch the count on in the $counted ($pid)" >&2
    fi
    : >"$gate" ;;
  esac
done
total=$(sed -n 's/^summary: //p' "$out/callgrind.$tag")
if [ -z "$total" ] || [ "$total" = 0 ]; then
  echo "no instructions were counted; see $out/bench-$tag.log" >&2
  exit 1
fi
echo "$stack $scenario: $((total / requests)) instructions per request in the $counted ($requests requests; profile $out/callgrind.$tag)"
