# Shared by the VM benches' scripts (sourced after test/integration/vm/scripts/lib.sh): timed
# plugin calls and dd throughput. MB: the size of one dd, in MiB.

# timed_call NAME METHOD JSON: one plugin call, timed alone (curl), as RESULT NAME_ms; then its
# reply checked (outside the timing) and printed.
timed_call() {
  local t0 t1 out err
  t0=$(date +%s%N)
  out=$(call "$2" "$3")
  t1=$(date +%s%N)
  err=$(echo "$out" | json Err)
  [ -n "$out" ] && [ -z "$err" ] || die "$2 $3: ${err:-no reply}"
  result "${1}_ms=$(( (t1 - t0) / 1000000 ))"
  echo "$out"
}

# mbps dd-ARGS...: MB/s of one sequential dd of $MB MiB (bs=1M)
mbps() {
  local t0 t1; t0=$(date +%s%N)
  dd bs=1M count="$MB" "$@" 2>/tmp/dd.err || die "dd $*: $(cat /tmp/dd.err)"
  t1=$(date +%s%N)
  awk "BEGIN { printf \"%.1f\", $MB / (($t1 - $t0) / 1e9) }"
}
