#!/bin/bash
# Regional merges of a hierarchical federation as a Slurm job array: task i
# runs the regional collector named on line i+1 of regions.txt
# (fedbatch-merge(1), HIERARCHICAL MERGES). Each task pulls the root's new
# generations and its sites' bundles, merges them into a partial aggregate
# and pushes it to the root's inbox; then the root merges:
#
#   jobid=$(sbatch --parsable --array=0-$(( $(wc -l < regions.txt) - 1 )) regional-merge.sh)
#   sbatch --dependency=afterok:$jobid --wrap 'fedbatch --home /srv/fedbatch/root pull && fedbatch --home /srv/fedbatch/root merge'
#
# Each region's home is $FEDBATCH_REGION_HOMES/<id> (a shared file system),
# with [remote] url (its sites' bundles) and [remote] upstream (the root's
# remote) set in its fedbatch.toml, and its key in the GnuPG home that its
# [gnupg] table names. Exit 5 (nothing to merge yet, or a partial already
# waiting for the root's next generation) counts as success.
#SBATCH --job-name=fedbatch-regions
#SBATCH --array=0-9
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=06:00:00
#SBATCH --output=fedbatch-region-%a.log
set -u
regions=${FEDBATCH_REGIONS:-/srv/fedbatch/regions.txt}
homes=${FEDBATCH_REGION_HOMES:-/srv/fedbatch/regions}
fedbatch=${FEDBATCH:-fedbatch}
index=${SLURM_ARRAY_TASK_ID:?run as a Slurm array task (sbatch --array), or set SLURM_ARRAY_TASK_ID}
region=$(sed -n "$((index + 1))p" "$regions")
if [ -z "$region" ]; then
  echo "no region on line $((index + 1)) of $regions" >&2
  exit 2
fi
export FEDBATCH_HOME="$homes/$region"
for step in pull merge push; do
  "$fedbatch" "$step" -q
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then
    echo "region $region: fedbatch $step exited $rc" >&2
    exit $rc
  fi
done
exit 0
