# Sourced by the GPU scripts. peak_mem MEMFILE CMD...: runs CMD, writes its peak device memory
# (MiB, polled with nvidia-smi about every 0.05 s, CUDA context included) to MEMFILE. One query
# per poll: a killed `nvidia-smi -lms` loses its buffered output.
peak_mem() {
  local memfile=$1; shift
  local log; log=$(mktemp)
  ( while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$log"; sleep 0.05; done ) &
  local mon=$!
  "$@"; local rc=$?
  kill $mon 2>/dev/null; wait $mon 2>/dev/null || true
  sort -n "$log" | tail -n1 > "$memfile"; rm -f "$log"
  return $rc
}
