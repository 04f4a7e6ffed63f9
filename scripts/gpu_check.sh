#!/usr/bin/env bash
# The GPU checks in one go, on a machine with a CUDA GPU: build the extensions in place, run the
# tests marked `cuda`, then the learner and training benchmarks on the GPU. Everything it prints
# also goes to OUT_DIR (logs and the benchmarks' JSON).
#
#   bash scripts/gpu_check.sh OUT_DIR [STAGES] [TRAIN_STEPS]
#
# STAGES: a comma list of tests, learner, train, train128, frames, compile, pong (default
# tests,learner,train): the cuda tests; bench_learner (graph, eager, and the graph on batches
# gathered on the GPU); bench_train with 1 and
# nproc-1 envs, updates overlapped with the envs and after each round (the first run also steps
# ale-py's AtariVectorEnv with nproc envs: the ratio issue 15 asks for); bench_train with nproc-1
# envs and batches of 128 every 16 steps (the same gradient samples per step); bench_train with
# nproc-1 envs at batch 32 and 128 with the replay's frames on the GPU (learner.device_frames:
# compare with train and train128, which gather on the host), and at 128 with acting captured
# too (learner.act_graph); bench_learner
# --compile (torch.compile); Pong with the fast-gpu preset for PONG_S seconds (default 300) of
# training (PONG_FLAGS: more train flags, e.g. "--device-frames on"), stopped by SIGINT (which
# saves), then every checkpoint evaluated under the protocol.
#
# Needs torch with CUDA, Cython, numpy, ale-py and gymnasium importable (PYTHONPATH is extended
# with the repository root: nothing is installed).
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR [STAGES] [TRAIN_STEPS]}
what=",${2:-tests,learner,train},"
steps=${3:-40000}
# DEVICE=cpu STARTS=400 runs the same stages on a CPU with few steps: a dry run of the plumbing
# before a device call is spent on it (the tests marked cuda skip there). PACK=1 leaves one
# archive in OUT_DIR, gpu_check.tar.gz, instead of a dozen files.
device=${DEVICE:-cuda}
starts=${STARTS:-5000}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
t0=$(date +%s)
stamp() { echo "[gpu_check $(( $(date +%s) - t0 )) s] $*"; }

stamp "build"
python3 setup.py build_ext --inplace -j "$(nproc)" -q >"$out/build.log" 2>&1 \
    || { tail -30 "$out/build.log"; exit 1; }
python3 - <<'EOF' 2>&1
import platform, torch, agent.native as n
print(platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA",
      "frame kernel", n.FRAME_KERNEL)
EOF
status=0
if [[ $what == *,tests,* ]]; then
    stamp "tests marked cuda"
    python3 -m pytest -q -p no:cacheprovider -m cuda tests/ 2>&1 | tee "$out/cuda_tests.log"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
fi
if [[ $what == *,learner,* ]]; then
    stamp "bench_learner"
    python3 scripts/bench_learner.py --device "$device" --device-frames \
        --json "$out/bench_learner.json" \
        2>&1 | tee "$out/bench_learner.log"
fi
if [[ $what == *,train,* ]]; then
    stamp "bench_train: 1 and $(( $(nproc) - 1 )) envs"
    python3 scripts/bench_train.py --device "$device" --envs "1,$(( $(nproc) - 1 ))" \
        --sb3-envs none --vector-envs "$(nproc)" --steps "$steps" --learning-starts "$starts" \
        --json "$out/bench_train.json" 2>&1 | tee "$out/bench_train.log"
    stamp "bench_train: $(( $(nproc) - 1 )) envs, updates after each round"
    python3 scripts/bench_train.py --device "$device" --envs "$(( $(nproc) - 1 ))" --overlap off \
        --sb3-envs none --steps "$steps" --learning-starts "$starts" \
        --json "$out/bench_train_lockstep.json" 2>&1 | tee "$out/bench_train_lockstep.log"
fi
if [[ $what == *,train128,* ]]; then
    stamp "bench_train: $(( $(nproc) - 1 )) envs, batch 128 every 16 steps"
    python3 scripts/bench_train.py --device "$device" --envs "$(( $(nproc) - 1 ))" --batch 128 \
        --train-freq 16 --sb3-envs none --steps "$steps" --learning-starts "$starts" \
        --json "$out/bench_train_b128.json" 2>&1 | tail -12
fi
if [[ $what == *,frames,* ]]; then
    for shape in "32 4 -" "128 16 -" "128 16 --act-graph"; do
        set -- $shape
        act=$([[ $3 == - ]] || echo "$3")
        stamp "bench_train: $(( $(nproc) - 1 )) envs, batch $1 every $2 steps, frames on the GPU $act"
        python3 scripts/bench_train.py --device "$device" --envs "$(( $(nproc) - 1 ))" --batch "$1" \
            --train-freq "$2" --device-frames on $act --sb3-envs none --steps "$steps" \
            --learning-starts "$starts" --json "$out/bench_train_frames_b$1${act:+_act_graph}.json" \
            2>&1 | tail -12
    done
fi
if [[ $what == *,pong,* ]]; then
    runs=${RUNS_DIR:-/tmp/gpu_check_runs}
    stamp "pong: the fast-gpu preset, ${PONG_S:-300} s of training (then SIGINT: it saves)"
    timeout -s INT -k 120 "${PONG_S:-300}" python3 -m agent.cli train --preset fast-gpu \
        --game pong --action-set minimal --name pong --runs-dir "$runs" --fresh \
        --total-steps 50000000 --checkpoint-every 250000 --keep-last 1000 --eval-every 0 \
        --report-seconds 30 ${PONG_FLAGS:-} >"$out/pong_train.log" 2>&1
    echo "train exit status $? (130: stopped by the signal, saved)"
    grep -v "^\s*$" "$out/pong_train.log" | tail -25
    cp "$runs/pong/metrics.jsonl" "$out/pong_metrics.jsonl"
    stamp "pong: evaluate every checkpoint, 10 episodes each"
    python3 -m agent.cli evaluate "$runs/pong" --episodes 10 --json "$out/pong_eval.json" 2>&1 \
        | tail -25
    last=$(ls "$runs"/pong/checkpoints/ckpt-*.pt | tail -1)
    stamp "pong: the last checkpoint, 30 episodes"
    python3 -m agent.cli evaluate "$last" --episodes 30 --with-random \
        --json "$out/pong_eval_last.json" 2>&1 | tail -8
fi
if [[ $what == *,compile,* ]]; then
    stamp "bench_learner --compile (torch.compile reduce-overhead against the graph)"
    timeout 300 python3 scripts/bench_learner.py --device "$device" --compile --repeats 3 \
        --json "$out/bench_learner_compile.json" 2>&1 | tee "$out/bench_learner_compile.log"
fi
if [[ -n ${PACK:-} ]]; then
    # The device tool brings back at most 8 files from OUT: everything in one archive.
    tar -czf "$out/../gpu_check.tar.gz" -C "$out" . && rm -rf "${out:?}"/* \
        && mv "$out/../gpu_check.tar.gz" "$out/" && stamp "packed: $out/gpu_check.tar.gz"
fi
stamp "done (status $status)"
exit $status
