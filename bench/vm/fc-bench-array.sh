# The array VM of the FC benchmark (bench/fc-bench.ts): LIO with tcm_fc on both FCoE ports and an
# sshd through which the host VM's ballast daemon manages it. As the SAN administrator would, the
# target ports and an ACL (no LUNs) per host initiator WWPN exist before the host logs in;
# ballast maps each volume's LUN in those ACLs, and the bench's by-hand baseline maps its own.
# When the host is done, reports what is left in LIO's configfs.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/fc-lib.sh"
lio_prepare
read -r -a ports <<<"$FC_ARRAY_WWPNS"
read -r -a peers <<<"$FC_LINK_PEERS"
for i in "${!ports[@]}"; do
  lio_fc_port "${ports[$i]}"
  mkdir -p "$LIO/fc/$(colons "${ports[$i]}")/tpgt_1/acls/$(colons "${peers[$i]}")" || die "ACL for ${peers[$i]}"
done

# sshd for the host's daemon: keys made by the bench in the share, nothing of /etc/ssh used.
# sshd runs every command through root's shell, and bash started by sshd reads ~/.bashrc: the
# lab machine's /root (seen through the VM's root overlay) has one that runs `pyenv init`, which
# cost every command of the daemon 15-25 s under TCG. An empty home for root, in this VM only.
mount -t tmpfs -o mode=0700 tmpfs /root || die "cannot give root an empty home"
mkdir -p /run/sshd
cat > /tmp/sshd_config <<CONF
ListenAddress 0.0.0.0
HostKey $SHARE/ssh/host_key
AuthorizedKeysFile $SHARE/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
StrictModes no
MaxStartups 50
PidFile /run/sshd-ballast.pid
CONF
/usr/sbin/sshd -f /tmp/sshd_config -E "$BALLAST_VM_LOGS/sshd.log" || die "sshd"

for nic in $FC_NICS; do fcoe_up "$nic" >/dev/null || die "FCoE port on $nic"; done
signal array-ready

# Not fc-lib's wait_for: its `sleep 0.1` loop forks ten processes a second for the whole run, CPU
# this one-CPU TCG VM needs for the target and the daemon's SSH commands.
for _ in $(seq 1800); do [ -e "$SHARE/bench-done" ] && break; sleep 2; done
[ -e "$SHARE/bench-done" ] || die "waited too long for bench-done"
# What the host's daemon (and the by-hand baseline) left in LIO: LUNs on the ports, LUNs mapped
# in ACLs, storage objects.
luns=$(find "$LIO/fc" -mindepth 4 -maxdepth 4 -path '*/lun/lun_*' | wc -l)
mapped=$(find "$LIO/fc" -mindepth 5 -maxdepth 5 -path '*/acls/*/lun_*' | wc -l)
objects=$(find "$LIO/core" -mindepth 2 -maxdepth 2 -path '*/fileio_*/*' -type d | wc -l)
result "array_left_luns=$luns array_left_mapped_luns=$mapped array_left_objects=$objects"
kill "$(cat /run/sshd-ballast.pid 2>/dev/null)" 2>/dev/null
exit 0
