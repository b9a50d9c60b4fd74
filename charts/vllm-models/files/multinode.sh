#!/bin/sh
# The Ray side of a vLLM model spread over several nodes: one LeaderWorkerSet group, whose
# controller sets LWS_LEADER_ADDRESS (the leader pod's DNS name) and LWS_GROUP_SIZE (pods in the
# group) in every container.
#
#   multinode.sh leader COMMAND...  start the Ray head, wait until every pod of the group has
#                                   joined with its GPUs, then run COMMAND (the vLLM server, with
#                                   --distributed-executor-backend ray: it places its ranks on
#                                   the whole Ray cluster).
#   multinode.sh worker             join the leader's Ray cluster and stay. When Ray ends, the
#                                   container ends and the group restarts as one
#                                   (restartPolicy RecreateGroupOnPodRestart).
#
# Ray writes its session under /tmp and its object store in /dev/shm (both emptyDirs); usage
# statistics stay off (no calls out of the cluster).
set -eu

role=${1:?usage: multinode.sh leader COMMAND... | multinode.sh worker}
shift
port=${RAY_PORT:-6379}
size=${LWS_GROUP_SIZE:?LWS_GROUP_SIZE is not set: run this in a LeaderWorkerSet pod}
export RAY_USAGE_STATS_ENABLED=0

alive_nodes() {
    python3 -c 'import ray; ray.init(address="auto", logging_level="ERROR"); print(sum(1 for n in ray.nodes() if n["Alive"]))'
}

case "$role" in
leader)
    [ "$#" -gt 0 ] || { echo "multinode.sh leader: no server command" >&2; exit 2; }
    ray start --head --port="$port" --disable-usage-stats --include-dashboard=false
    while :; do
        alive=$(alive_nodes) || alive=0
        [ "$alive" -ge "$size" ] && break
        echo "multinode.sh: $alive of $size nodes in the Ray cluster; waiting for the workers"
        sleep 5
    done
    echo "multinode.sh: all $size nodes joined; starting the server"
    exec "$@"
    ;;
worker)
    leader=${LWS_LEADER_ADDRESS:?LWS_LEADER_ADDRESS is not set: run this in a LeaderWorkerSet pod}
    # The leader may not listen yet: retry until it takes this node, then block with Ray.
    until ray start --address="$leader:$port" --disable-usage-stats --block; do
        echo "multinode.sh: the Ray head $leader:$port does not answer yet; retrying"
        sleep 5
    done
    ;;
*)
    echo "multinode.sh: unknown role $role (leader or worker)" >&2
    exit 2
    ;;
esac
