# npm run bench:luks, inside the VM: sequential direct IO through an encrypted ballast volume
# (LUKS2, dm-crypt) against a plain one in the same run, and the same on the raw devices by hand
# (a loop device, and a dm-crypt mapping opened on another). MB: the size of one dd, in MiB.
set -euo pipefail
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
. "$BALLAST_SRC/bench/vm/bench-lib.sh"
modprobe loop && modprobe dm_crypt || die "no dm_crypt module in this kernel"
ROOT=$BALLAST_RUN/loop KEYS=$BALLAST_RUN/keys
mkdir -p -m 700 "$KEYS"
head -c 64 /dev/urandom > "$KEYS/sec.key" && chmod 600 "$KEYS/sec.key"
{ base_config bench; cat <<YAML
backends: {loop: {root: $ROOT}}
encryption: {key_dir: $KEYS}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast
size=$(( MB + 64 ))M
expect_ok VolumeDriver.Create "{\"Name\":\"plain\",\"Opts\":{\"size\":\"$size\"}}" >/dev/null
expect_ok VolumeDriver.Create "{\"Name\":\"sec\",\"Opts\":{\"size\":\"$size\",\"encrypted\":\"true\"}}" >/dev/null
plain=$(expect_ok VolumeDriver.Mount '{"Name":"plain","ID":"b1"}' | json Mountpoint)
sec=$(expect_ok VolumeDriver.Mount '{"Name":"sec","ID":"b2"}' | json Mountpoint)

# By hand: a loop device of its own, and a LUKS2 mapping (same cipher and PBKDF as ballast's) on another.
truncate -s "$size" /tmp/raw.img /tmp/crypt.img
raw=$(losetup --find --show /tmp/raw.img)
cdev=$(losetup --find --show /tmp/crypt.img)
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --iter-time 100 --key-file "$KEYS/sec.key" "$cdev"
cryptsetup open --key-file "$KEYS/sec.key" "$cdev" bench-crypt
result cipher=$(cryptsetup status bench-crypt | awk '/cipher:/ {print $2}')

for i in $(seq "$ROUNDS"); do
  result "plain_write_$i=$(mbps if=/dev/zero of="$plain/f" oflag=direct conv=fsync)" "plain_read_$i=$(mbps if="$plain/f" of=/dev/null iflag=direct)"
  result "sec_write_$i=$(mbps if=/dev/zero of="$sec/f" oflag=direct conv=fsync)" "sec_read_$i=$(mbps if="$sec/f" of=/dev/null iflag=direct)"
  result "raw_write_$i=$(mbps if=/dev/zero of="$raw" oflag=direct)" "raw_read_$i=$(mbps if="$raw" of=/dev/null iflag=direct)"
  result "crypt_write_$i=$(mbps if=/dev/zero of=/dev/mapper/bench-crypt oflag=direct)" "crypt_read_$i=$(mbps if=/dev/mapper/bench-crypt of=/dev/null iflag=direct)"
done

cryptsetup close bench-crypt
losetup -d "$raw" "$cdev"
rm -f /tmp/raw.img /tmp/crypt.img
expect_ok VolumeDriver.Unmount '{"Name":"plain","ID":"b1"}' >/dev/null
expect_ok VolumeDriver.Unmount '{"Name":"sec","ID":"b2"}' >/dev/null
for v in plain sec; do expect_ok VolumeDriver.Remove "{\"Name\":\"$v\"}" >/dev/null; done
result left_maps=$(dmsetup ls --target crypt | grep -c '^ballast-' || true) left_loops=$(losetup -a | wc -l)
kill "$BALLAST_PID"; wait "$BALLAST_PID" || true
