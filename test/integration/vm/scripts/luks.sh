# Encrypted volumes (encrypted=true: LUKS2 under the filesystem) on the loop backend, in a real
# kernel with dm-crypt, and IO limits on cgroup v2: the ballast daemon in the VM, called on its
# plugin socket.
set -euo pipefail
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
modprobe loop && modprobe dm_crypt || die "no dm_crypt module in this kernel"

KEYS=$BALLAST_RUN/keys ROOT=$BALLAST_RUN/loop
mkdir -p -m 700 "$KEYS"
newkey() { head -c 64 /dev/urandom > "$1" && chmod 600 "$1"; }
newkey "$KEYS/sec.key"
newkey "$BALLAST_RUN/team.key"
{ base_config vm1; cat <<YAML
backends: {loop: {root: $ROOT}}
encryption: {key_dir: $KEYS}
profiles:
  default: {backend: loop}
  team: {backend: loop, key_file: $BALLAST_RUN/team.key}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast

maps() { dmsetup ls --target crypt | grep -c '^ballast-' || true; }
loops_of() { losetup -j "$ROOT/$1/disk.img" | wc -l; }
err_of() { call "$@" | json Err; }
MARKER=ballast-plaintext-marker-5f1c2e9a

# No key for the volume: refused at Create, naming the file to make; nothing made.
save nokey_err "$(err_of VolumeDriver.Create '{"Name":"nokey","Opts":{"encrypted":"true"}}')"
result nokey_made=$([ -e "$ROOT/nokey" ] && echo yes || echo no)
chmod 644 "$KEYS/sec.key"
save openkey_err "$(err_of VolumeDriver.Create '{"Name":"sec","Opts":{"encrypted":"true"}}')"
chmod 600 "$KEYS/sec.key"

# Create, first Mount (LUKS2 header, then mkfs on the mapping), write, Unmount.
expect_ok VolumeDriver.Create '{"Name":"sec","Opts":{"encrypted":"true","size":"64M"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"sec","ID":"c1"}' | json Mountpoint)
result source=$(findmnt -no SOURCE "$mp") maps_mounted=$(maps)
result luks_version=$(cryptsetup luksDump "$ROOT/sec/disk.img" | awk '/^Version:/ {print $2}')
for _ in $(seq 2000); do echo "$MARKER"; done > "$mp/secret.txt"
sum=$(md5sum < "$mp/secret.txt")
expect_ok VolumeDriver.Unmount '{"Name":"sec","ID":"c1"}' >/dev/null
result maps_after_unmount=$(maps) loops_after_unmount=$(loops_of sec)
# At rest: ciphertext only. The same check on a plain volume finds the marker (the check can fail).
result plaintext_in_image=$(grep -c "$MARKER" "$ROOT/sec/disk.img" || true)
expect_ok VolumeDriver.Create '{"Name":"plain","Opts":{"size":"64M"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"plain","ID":"p1"}' | json Mountpoint)
echo "$MARKER" > "$mp/secret.txt"
expect_ok VolumeDriver.Unmount '{"Name":"plain","ID":"p1"}' >/dev/null
result plaintext_in_plain_image=$(grep -c "$MARKER" "$ROOT/plain/disk.img" || true)

# Mount again: the data reads back through ballast.
mp=$(expect_ok VolumeDriver.Mount '{"Name":"sec","ID":"c2"}' | json Mountpoint)
result data_intact=$([ "$(md5sum < "$mp/secret.txt")" = "$sum" ] && echo yes || echo no)
expect_ok VolumeDriver.Unmount '{"Name":"sec","ID":"c2"}' >/dev/null

# A wrong key, then a missing one: a clear Err, nothing left open or attached, the lease given back.
mv "$KEYS/sec.key" "$BALLAST_RUN/sec.key.right"
newkey "$KEYS/sec.key"
save wrongkey_err "$(err_of VolumeDriver.Mount '{"Name":"sec","ID":"c3"}')"
result maps_after_wrong_key=$(maps) loops_after_wrong_key=$(loops_of sec)
rm "$KEYS/sec.key"
save missingkey_err "$(err_of VolumeDriver.Mount '{"Name":"sec","ID":"c4"}')"
result maps_after_missing_key=$(maps) loops_after_missing_key=$(loops_of sec)

# Key rotation as the README documents it: add the new key to a free slot, remove the old one.
dev=$(losetup --find --show "$ROOT/sec/disk.img")
newkey "$BALLAST_RUN/sec.key.new"
cryptsetup luksAddKey --batch-mode --pbkdf pbkdf2 --iter-time 100 --key-file "$BALLAST_RUN/sec.key.right" "$dev" "$BALLAST_RUN/sec.key.new"
cryptsetup luksRemoveKey --batch-mode "$dev" "$BALLAST_RUN/sec.key.right"
losetup -d "$dev"
cp "$BALLAST_RUN/sec.key.right" "$KEYS/sec.key" && chmod 600 "$KEYS/sec.key"
save oldkey_err "$(err_of VolumeDriver.Mount '{"Name":"sec","ID":"c5"}')"
cp "$BALLAST_RUN/sec.key.new" "$KEYS/sec.key"
mp=$(expect_ok VolumeDriver.Mount '{"Name":"sec","ID":"c6"}' | json Mountpoint)
result data_after_rotation=$([ "$(md5sum < "$mp/secret.txt")" = "$sum" ] && echo yes || echo no)
expect_ok VolumeDriver.Unmount '{"Name":"sec","ID":"c6"}' >/dev/null

# Grow while unmounted: the mapping opens at the new size and the filesystem follows.
ballast volume grow sec 128M >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"sec","ID":"c7"}' | json Mountpoint)
result mapped_bytes_grown=$(blockdev --getsize64 "$(findmnt -no SOURCE "$mp")") fs_bytes_grown=$(df -B1 --output=size "$mp" | tail -1 | tr -d ' ')
result data_after_grow=$([ "$(md5sum < "$mp/secret.txt")" = "$sum" ] && echo yes || echo no)
expect_ok VolumeDriver.Unmount '{"Name":"sec","ID":"c7"}' >/dev/null

# A profile's key_file; a clone opens with its source's key.
expect_ok VolumeDriver.Create '{"Name":"team1","Opts":{"encrypted":"true","profile":"team","size":"32M"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"team1","ID":"t1"}' | json Mountpoint)
echo team > "$mp/who"
expect_ok VolumeDriver.Unmount '{"Name":"team1","ID":"t1"}' >/dev/null
result team_header=$(cryptsetup isLuks "$ROOT/team1/disk.img" && echo luks || echo none)
expect_ok VolumeDriver.Create '{"Name":"team2","Opts":{"from":"team1"}}' >/dev/null
mp=$(expect_ok VolumeDriver.Mount '{"Name":"team2","ID":"t2"}' | json Mountpoint)
result clone_data=$(cat "$mp/who")
expect_ok VolumeDriver.Unmount '{"Name":"team2","ID":"t2"}' >/dev/null

# IO limits on cgroup v2 (io.max), on the encrypted volume's mapping as the enforcer applies them
# to a container: a process in a cgroup of its own writes with O_DIRECT, capped, then one uncapped.
export CGROUP2=/tmp/cgroup2
mkdir -p "$CGROUP2" && mount -t cgroup2 none "$CGROUP2"
echo +io > "$CGROUP2/cgroup.subtree_control"
mkdir "$CGROUP2/capped" "$CGROUP2/free"
mp=$(expect_ok VolumeDriver.Mount '{"Name":"sec","ID":"io"}' | json Mountpoint)
mkfifo /tmp/go
# in_cgroup NAME CMD...: runs CMD in cgroup NAME once /tmp/go is written; prints its seconds.
# The shell in the cgroup leaves its PID in /tmp/NAME.pid.
in_cgroup() { local cg=$1; shift; sh -c 'echo $$ > "$0/cgroup.procs"; echo $$ > "/tmp/$(basename "$0").pid"; read -r _ < /tmp/go; t0=$(date +%s%N); "$@" 2>/dev/null; echo $(( ($(date +%s%N) - t0) / 1000000 ))' "$CGROUP2/$cg" "$@"; }
in_cgroup capped dd if=/dev/zero of="$mp/capped" bs=64k count=96 oflag=direct > /tmp/capped.ms &
capped=$!
for _ in $(seq 100); do [ -s /tmp/capped.pid ] && break; nap 0.1; done
result io_max_line="$(node "$BALLAST_SRC/test/integration/vm/scripts/io-max.mjs" "$(cat /tmp/capped.pid)" "$(findmnt -no SOURCE "$mp")" '{"writeBps":1048576}' | tr ' ' ',')"
echo go > /tmp/go; wait "$capped"
in_cgroup free dd if=/dev/zero of="$mp/free" bs=64k count=96 oflag=direct > /tmp/free.ms &
free=$!
for _ in $(seq 100); do [ -s /tmp/free.pid ] && break; nap 0.1; done
echo go > /tmp/go; wait "$free"
result capped_6mib_ms=$(cat /tmp/capped.ms) free_6mib_ms=$(cat /tmp/free.ms)
expect_ok VolumeDriver.Unmount '{"Name":"sec","ID":"io"}' >/dev/null
rmdir "$CGROUP2/capped" "$CGROUP2/free"; umount "$CGROUP2"

for v in sec plain team1 team2; do expect_ok VolumeDriver.Remove "{\"Name\":\"$v\"}" >/dev/null; done
result maps_end=$(maps) loops_end=$(losetup -a | grep -c "$ROOT" || true) volumes_end=$(ls "$ROOT" | grep -vc '^\.' || true)
kill "$BALLAST_PID"; wait "$BALLAST_PID" || true
result done=yes
