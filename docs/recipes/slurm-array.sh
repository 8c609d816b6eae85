#!/usr/bin/env bash
# A Slurm job array: one sweep worker per array task. Submit from a clone of the pushed commit:
#   sbatch --array=0-3 docs/recipes/slurm-array.sh        # 4 workers share the grid
# Change for your cluster: REPO (the git URL every node can clone), the partition and resources, and the
# team's DVC remote credentials (an S3 or SSH remote in .dvc/config; secrets in each node's environment).
#SBATCH --job-name=mnist-sweep
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=01:00:00
#SBATCH --output=sweep-%A_%a.log
set -euo pipefail

REPO=${REPO:-git@example.com:team/mnist-dvc.git}   # the bare origin everyone pushes experiments to
COMMIT=${COMMIT:-main}                              # the pushed commit the sweep starts from
SWEEP=${SWEEP:-"-S 'lr=0.003,0.006' -S 'batch_size=256,512'"}

work=$(mktemp -d "${TMPDIR:-/tmp}/sweep-${SLURM_ARRAY_JOB_ID}-${SLURM_ARRAY_TASK_ID}-XXXX")
trap 'rm -rf "$work"' EXIT
git clone --quiet "$REPO" "$work/repo"
cd "$work/repo"
git checkout --quiet "$COMMIT"
git config user.name "sweep worker $SLURM_ARRAY_TASK_ID"   # dvc exp run commits each experiment
git config user.email "sweep@example.com"
# --array=1-4 works too: the shard is the task's place in the array
make sweep-worker SHARD="$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN))" SHARDS="$SLURM_ARRAY_TASK_COUNT" \
    SWEEP="$SWEEP"
