# One host (this VM) on two simulated arrays over iSCSI: the Dell Storage Manager and Spectrum
# Connect simulators run on the host with tgtd behind them, reached at 10.0.2.2. Per backend:
# Create, Mount (the array maps the volume to this host's server/host object; the kernel logs
# in, multipath, reservation), write, Unmount (nothing left), Mount again with the data intact,
# Unmount, Remove.
set -u
. "$BALLAST_SRC/test/integration/vm/scripts/lib.sh"
printf '%s\n' "$SC_PASSWORD" > "$BALLAST_RUN/sc.password"
printf '%s\n' "$SCBE_PASSWORD" > "$BALLAST_RUN/scbe.password"
{ base_config "$BALLAST_VM_NAME"; cat <<YAML
log: {level: debug}
backends:
  dellsc:
    url: http://10.0.2.2:$SC_PORT
    user: Admin
    password_file: $BALLAST_RUN/sc.password
    ssn: $SC_SSN
    metadata_root: $BALLAST_RUN/meta
  scbe:
    url: http://10.0.2.2:$SCBE_PORT
    user: ballast
    password_file: $BALLAST_RUN/scbe.password
    service: gold
    host_name: $BALLAST_VM_NAME
    iscsi: {target: "$SCBE_TARGET", portals: ["10.0.2.2:$ISCSI_PORT"]}
    metadata_root: $BALLAST_RUN/meta
profiles:
  default: {backend: dellsc}
  ibm: {backend: scbe}
YAML
} > "$BALLAST_RUN/config.yml"
start_ballast

for p in default ibm; do
  v=vol-$p
  expect_ok VolumeDriver.Create "{\"Name\":\"$v\",\"Opts\":{\"size\":\"1G\",\"profile\":\"$p\"}}" >/dev/null
  reply=$(timed "${p}_mount" expect_ok VolumeDriver.Mount "{\"Name\":\"$v\",\"ID\":\"c1\"}") || die "mount $v"
  mp=$(echo "$reply" | json Mountpoint)
  result "${p}_sessions_mounted=$(sessions) ${p}_maps_mounted=$(dm_maps)"
  head -c 4M /dev/urandom > "$mp/data" && sync
  sum=$(sha256sum < "$mp/data")
  timed "${p}_unmount" expect_ok VolumeDriver.Unmount "{\"Name\":\"$v\",\"ID\":\"c1\"}" >/dev/null
  result "${p}_sessions_after_unmount=$(sessions) ${p}_disks_after_unmount=$(scsi_disks) ${p}_maps_after_unmount=$(dm_maps)"
  mp=$(expect_ok VolumeDriver.Mount "{\"Name\":\"$v\",\"ID\":\"c2\"}" | json Mountpoint) || die "mount $v again"
  result "${p}_intact=$([ "$(sha256sum < "$mp/data")" = "$sum" ] && echo yes || echo no)"
  expect_ok VolumeDriver.Unmount "{\"Name\":\"$v\",\"ID\":\"c2\"}" >/dev/null
  expect_ok VolumeDriver.Remove "{\"Name\":\"$v\"}" >/dev/null
  result "${p}_removed=yes ${p}_sessions_end=$(sessions)"
done
kill $BALLAST_PID; wait $BALLAST_PID 2>/dev/null
exit 0
