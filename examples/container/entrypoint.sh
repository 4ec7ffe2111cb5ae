#!/bin/sh
# Container entrypoint: restore the databases on first boot, then mount and
# run the application under walsync.
#
#   entrypoint.sh [APP [ARG...]]
#
# WALSYNC_REPLICA    replica root URL, s3://bucket/prefix or file:///dir (required)
# WALSYNC_DATA       walsync's data directory (default /var/lib/walsync): keep
#                    it on a volume, it holds the staging of what is not
#                    shipped yet
# WALSYNC_MOUNT      mount point the application opens its databases under
#                    (default /mnt/walsync)
# WALSYNC_DATABASES  database paths under the mount, separated by spaces
#                    ("app.db tenants/a.db"): each one missing from
#                    WALSYNC_DATA is restored from the replica, if the
#                    replica holds it
# WALSYNC            the walsync binary (default walsync, found in PATH)
#
# With APP, walsync mounts, runs APP ARG... (exactly those words: for shell
# syntax use sh -c '...'), forwards SIGTERM and SIGINT to it, and when it
# exits unmounts, uploads what is staged and exits with its status. Without
# APP, walsync mounts and runs until SIGTERM. WALSYNC_DATA and WALSYNC_MOUNT
# are exported to APP.
set -eu
set -f # the names in WALSYNC_DATABASES are not globs

WALSYNC=${WALSYNC:-walsync}
if [ -z "${WALSYNC_REPLICA:-}" ]; then
	echo "entrypoint: WALSYNC_REPLICA is not set: the replica root URL (s3://bucket/prefix or file:///dir)" >&2
	exit 2
fi
WALSYNC_REPLICA=${WALSYNC_REPLICA%/}
WALSYNC_DATA=${WALSYNC_DATA:-/var/lib/walsync}
WALSYNC_MOUNT=${WALSYNC_MOUNT:-/mnt/walsync}
export WALSYNC_DATA WALSYNC_MOUNT

mkdir -p "$WALSYNC_DATA" "$WALSYNC_MOUNT"
for db in ${WALSYNC_DATABASES:-}; do
	case /$db/ in
	//* | */../* | */./*)
		echo "entrypoint: WALSYNC_DATABASES: $db is not a relative path under the mount" >&2
		exit 2
		;;
	esac
	mkdir -p "$(dirname "$WALSYNC_DATA/$db")"
	"$WALSYNC" restore --if-db-not-exists --if-replica-exists \
		-o "$WALSYNC_DATA/$db" "$WALSYNC_REPLICA/$db"
done

if [ $# -eq 0 ]; then
	exec "$WALSYNC" mount "$WALSYNC_MOUNT" --data "$WALSYNC_DATA" --replica "$WALSYNC_REPLICA"
fi

# The application's words, each quoted for /bin/sh -c, after an exec: the
# shell becomes the application, so that the SIGTERM walsync forwards to its
# child reaches the application itself (dash would otherwise stay its
# parent, die of the signal and leave the application running).
app=
for arg do
	quoted=
	while :; do
		case $arg in
		*\'*)
			head=${arg%%\'*}
			quoted=$quoted$head\'\\\'\'
			arg=${arg#*\'}
			;;
		*)
			quoted="$quoted$arg"
			break
			;;
		esac
	done
	app="$app '$quoted'"
done
exec "$WALSYNC" mount "$WALSYNC_MOUNT" --data "$WALSYNC_DATA" --replica "$WALSYNC_REPLICA" --exec "exec$app"
