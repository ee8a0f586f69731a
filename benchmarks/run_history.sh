#!/usr/bin/env bash
# asv history over the last N commits, offline, on the current interpreter.
#
#   benchmarks/run_history.sh [N] [extra asv run arguments, e.g. -b PrefixDynamics]
#   benchmarks/run_history.sh 5 --skip-existing-successful    # only what is missing
#
# Each commit's package is exported with `git archive` (no checkout, no worktree: the git state
# is untouched) into .asv/trees/<sha>, and the benchmarks of this checkout are run against it
# (ASV_PYTHONPATH puts that tree first on the benchmark processes' path) and recorded under the
# commit's hash. Benchmarks needing code a commit lacks skip themselves there.
# `asv run --python=same` records nothing without --set-commit-hash; HEAD's tree is the
# committed one, so uncommitted edits are not charted (use `asv run --python=same
# --set-commit-hash=$(git rev-parse HEAD)` from the work tree to chart them instead).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
n=${1:-5}
shift || true
asv machine --yes >/dev/null
status=0
for sha in $(git rev-list --reverse --max-count="$n" HEAD); do
    tree=".asv/trees/$sha"
    if [ ! -d "$tree/icl_verify" ]; then
        mkdir -p "$tree"
        git archive "$sha" icl_verify | tar -x -C "$tree"
    fi
    echo "== $(git log -1 --format='%h %s' "$sha")"
    ASV_PYTHONPATH="$root/$tree" asv run --python=same --set-commit-hash="$sha" "$@" || status=$?
done
exit "$status"  # non-zero when some benchmark failed at some commit (the others still ran)
