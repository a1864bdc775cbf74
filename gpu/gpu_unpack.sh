# Sourced by the GPU machine's scripts. gpu_unpack BIN XZ: unpacks the carried binary XZ to BIN
# unless BIN came from the same archive (a warm machine keeps /tmp between calls, so a stale
# build would otherwise run); does nothing where XZ is absent.
gpu_unpack() {
  local bin=$1 xz=$2
  [ -f "$xz" ] || return 0
  if [ "$(cat "$bin.sha256" 2>/dev/null)" != "$(sha256sum < "$xz")" ]; then
    xz -dc "$xz" > "$bin" && chmod +x "$bin" && sha256sum < "$xz" > "$bin.sha256"
  fi
}
