#!/bin/sh
# Driving the deploy queue (mk/deploy-queue.sh) on a GPU box reached one short command at a time
# (a lent machine that carries at most 64 MiB a call and may be taken back between calls): every
# step is one call, the queue runs detached, and every poll copies the records back.
#
#   mk/lease.sh part [first]         keep the bundle part(s) this call carried (.bundle/) in $BUNDLE_DIR;
#                                    `first` also describes the box and generates the checkpoint, detached
#   mk/lease.sh install RUN COMMIT   install the bundle, compile bytecode, start the queue detached
#   mk/lease.sh poll RUN [SECONDS]   wait, print where the queue stands, pack records and logs into $OUT
#   mk/lease.sh finish RUN COMMIT    stop the queue, write the records of a stage cut short, pack
#
# STAGES (default "warm mp"), WARM_STARTS, MP_STARTS, WARMUPS, CACHE_WARMUP and FORKSPAWN_START_LIMIT_S
# reach the queue.
# What the 2026-12-07 lease taught (docs/deployments.md): a bundle must carry the harness's own
# imports (bundle.HARNESS), the install is checked by importing what a cold start imports before the
# queue starts, polls are short (the machine can be taken back mid-call: what is not copied back is
# lost), and nothing waits on `pgrep -f` of a pattern its own command line contains.
set -u
cd "$(dirname "$0")/.." || exit 2
BUNDLE_DIR=${BUNDLE_DIR:-$HOME/bundle}
OUT=${OUT:-.asv/lease-out}
MODEL=${FORKSPAWN_MODEL:-1b}
FS=${FORKSPAWN:-.venv/bin/forkspawn}
PY=$(dirname "$FS")/python
pack() {  # RUN: records, the queue's logs, the install's and the box's description, into $OUT
  mkdir -p "$OUT"
  tar czf "$OUT/lease.tgz" .asv/results/*/records ".asv/queue-$1" "$BUNDLE_DIR"/*.log "$BUNDLE_DIR"/machine.json \
    "$HOME/.asv-machine.json" 2>/dev/null
  ls -l "$OUT"
}
case "${1:-}" in
  part)
    mkdir -p "$BUNDLE_DIR" && cp .bundle/manifest.json .bundle/bundle.tar.xz.* "$BUNDLE_DIR"/ || exit 1
    ls "$BUNDLE_DIR"
    if [ "${2:-}" = first ]; then
      date -u; nvidia-smi --query-gpu=name,uuid,driver_version,memory.total,memory.used --format=csv,noheader
      python3 -V; echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-unset}"; cat /proc/sys/kernel/random/boot_id
      setsid nohup sh -c "${PYTHON:-python3} -m forkspawn model $MODEL > $BUNDLE_DIR/model.log 2>&1; echo \$? > $BUNDLE_DIR/model.done" \
        > /dev/null 2>&1 < /dev/null &
    fi ;;
  install)
    RUN=$2 COMMIT=$3; t=$(date +%s)
    [ -e .venv/bin/.done ] || make offline-env OFFLINE=1 BUNDLE_DIR="$BUNDLE_DIR" > "$BUNDLE_DIR/install.log" 2>&1 \
      || { tail -5 "$BUNDLE_DIR/install.log"; exit 1; }
    "$PY" -c "import asv_runner.statistics, forkspawn.engines.vllm, vllm" || exit 1  # what every cold start imports
    # pip install --no-compile (and the box's own packages where its image has none) leave no
    # .pyc, and PYTHONDONTWRITEBYTECODE keeps it so: every process would compile the source again.
    # Users' installs compile it: so does this (`compileall` writes .pyc whatever that variable says).
    for d in $("$PY" -c 'import os, sysconfig, torch, numpy
print(sysconfig.get_paths()["purelib"], *(os.path.dirname(m.__file__) for m in (torch, numpy)))'); do
      "$PY" -m compileall -q -j 0 "$d" > /dev/null 2>&1
    done
    echo "install and bytecode: $(( $(date +%s) - t )) s"
    while [ ! -e "$BUNDLE_DIR/model.done" ]; do sleep 1; done; tail -1 "$BUNDLE_DIR/model.log"
    "$FS" machine --asv && "$FS" machine > "$BUNDLE_DIR/machine.json"
    FORKSPAWN_RUN_ID=$RUN ASV_COMMIT=$COMMIT FORKSPAWN=$FS \
      FORKSPAWN_START_LIMIT_S=${FORKSPAWN_START_LIMIT_S:-240} \
      setsid nohup mk/deploy-queue.sh ${STAGES:-warm mp} > "$BUNDLE_DIR/queue.log" 2>&1 < /dev/null &
    sleep 5; cat ".asv/queue-$RUN/queue.log" ;;
  poll)
    sleep "${3:-120}"; date -u
    tail -n 3 ".asv/queue-$2/queue.log"; tail -n 6 ".asv/queue-$2/progress.log" 2>/dev/null
    nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null
    pack "$2" ;;
  finish)
    RUN=$2 COMMIT=$3
    pg=$(ps -eo pgid,args | awk '/mk\/deploy-queue\.sh/ && !/awk/ {print $1; exit}')
    if [ -n "$pg" ]; then  # the prefill stops the cold start in flight and reaps its processes
      kill -TERM "-$pg"  # dash's kill takes no `--`
      for _ in $(seq 60); do ps -eo pgid= | grep -qx " *$pg" || break; sleep 1; done
    fi
    FORKSPAWN_RUN_ID=$RUN ASV_COMMIT=$COMMIT FORKSPAWN=$FS \
      mk/deploy-queue.sh finish $(echo "${STAGES:-warm mp}" | tr ' ' '\n' | grep -xE 'coldcache|warm|mp|eager|serve|crash') 2>&1 | tail -3
    "$FS" leftovers; nvidia-smi --query-gpu=memory.used --format=csv,noheader 2>/dev/null
    tail -n 5 ".asv/queue-$RUN/queue.log"
    pack "$RUN" ;;
  *) echo "mk/lease.sh: part [first] | install RUN COMMIT | poll RUN [SECONDS] | finish RUN COMMIT" >&2; exit 2 ;;
esac
