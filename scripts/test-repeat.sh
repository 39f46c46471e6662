#!/bin/bash
# Flakiness before CI finds it: the timing-sensitive test modules, N rounds, while busy loops take every core (a
# loaded 2-core CI runner is what these tests must survive). `make test-repeat [N=3] [TESTS="..."]`; run it before
# a stop that touches the queue, the worker, builds' processes, publishing or the faults they survive.
set -euo pipefail
rounds=${1:-3}
shift || true
if [ "$#" -eq 0 ]; then
    set -- tests/integration/test_queue.py tests/integration/test_worker.py tests/integration/test_build_process.py \
        tests/integration/test_publish.py tests/integration/test_faults.py
fi
load=()
for _ in $(seq "$(nproc)"); do
    (while :; do :; done) &
    load+=("$!")
done
trap 'kill "${load[@]}" 2>/dev/null || true' EXIT
for round in $(seq "$rounds"); do
    echo "== round $round of $rounds, under load: $*"
    LIBGUESTFS_BACKEND_SETTINGS=force_tcg .venv/bin/pytest -q -x -p no:cacheprovider "$@"
done
