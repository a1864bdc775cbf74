#!/usr/bin/env bash
# Runs the fault list (bad flags, missing and corrupt files, unreachable hub, output paths,
# runs that compute nothing, non-finite numbers, signals, stale temporaries, saved modes,
# thread-count determinism) against the built binary and prints a Markdown table: case,
# exit code, first stderr line, what was left behind in the working folder, and whether the
# case ended cleanly. Exit status 1 if any case is unclean.
#
#   cargo build && bash checks/fault_table.sh [BINARY] > test_results/faults/README.md
#
# Clean means, for a refused run: exit != 0, exactly one non-empty stderr line starting
# "error:", no panic, and the working folder byte for byte as before (nothing written,
# nothing of the user's removed). Signals: exit 130/143, one "error: interrupted" line,
# nothing left. Needs ../shared (fixture opt-mini-b, data) and python3 (makes the damaged
# checkpoints). Nothing reaches the real hub: HF_HOME is a fresh folder, and the hub
# cases point HF_ENDPOINT at a closed local port or at checks/hub_standin.py on 127.0.0.1
# (damaged pytorch_model.bin files served, refused configs served with their weights).
set -u
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/debug/sparsegpt-mi}")
SHARED=$(realpath ../shared)
FIX=$SHARED/fixtures/opt-mini-b
[ -x "$BIN" ] || { echo "error: no binary at $BIN (cargo build first)" >&2; exit 2; }
ROOT=$(mktemp -d)
HUBPID=
trap '[ -z "$HUBPID" ] || kill "$HUBPID" 2>/dev/null; rm -rf "$ROOT"' EXIT
W=$ROOT/work
M=$ROOT/models
export SPARSEGPT_MI_DATA_DIR=$SHARED/data HF_HOME=$ROOT/hf HF_HUB_OFFLINE=1
unset RUST_BACKTRACE HF_ENDPOINT
ENVPRE=()  # `env` arguments for the next cases (e.g. -u VAR)

pristine() {
  rm -rf "$W"
  mkdir -p "$W/user"
  cp -r "$FIX" "$W/model"
  chmod -R u+w "$W/model"
  printf 'the user%ss own notes\n' "'" > "$W/user/notes.txt"
  echo "a file" > "$W/afile"
}

# Every path under the working folder with its content hash (folders and links too).
snap() {
  (cd "$W" && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
    if [ -L "$p" ]; then echo "L $p -> $(readlink "$p")"
    elif [ -d "$p" ]; then echo "D $p"
    else echo "F $p $(sha256sum < "$p" | cut -c1-16)"; fi
  done)
}

# ---- damaged checkpoints (python3: safetensors rewritten tensor by tensor) ----
mkmodel() { # NAME: a copy of fixture B under $M/NAME
  rm -rf "$M/$1"; mkdir -p "$M"; cp -r "$FIX" "$M/$1"; chmod -R u+w "$M/$1"
}
edit_st() { # NAME PYTHON-EDIT: runs EDIT with `t` = {name: [dtype, shape, bytearray]}
  python3 - "$M/$1/model.safetensors" "$2" <<'EOF'
import json, struct, sys
path, code = sys.argv[1], sys.argv[2]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
meta = head.pop("__metadata__", None)
t = {k: [v["dtype"], v["shape"], bytearray(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]])] for k, v in head.items()}
def f32(values): return bytearray(struct.pack(f"<{len(values)}f", *values))
exec(code)
out, off, data = {}, 0, []
for k in sorted(t):
    d, shape, b = t[k]
    out[k] = {"dtype": d, "shape": shape, "data_offsets": [off, off + len(b)]}
    off += len(b); data.append(bytes(b))
if meta is not None: out["__metadata__"] = meta
h = json.dumps(out).encode(); h += b" " * (-len(h) % 8)
open(path, "wb").write(struct.pack("<Q", len(h)) + h + b"".join(data))
EOF
}
L1=model.decoder.layers.1
mkmodel nan_fc1_row;   edit_st nan_fc1_row "b=t['$L1.fc1.weight'][2]; b[5*192*2:6*192*2]=b'\x00\x7e'*192"
mkmodel inf_q_proj;    edit_st inf_q_proj "b=t['model.decoder.layers.3.self_attn.q_proj.weight'][2]; b[0:2]=b'\x00\x7c'"
mkmodel nan_embed;     edit_st nan_embed "b=t['model.decoder.embed_tokens.weight'][2]; b[100:102]=b'\x00\x7e'"
mkmodel nan_ln_bias;   edit_st nan_ln_bias "b=t['model.decoder.final_layer_norm.bias'][2]; b[0:2]=b'\x00\x7e'"
mkmodel f32_overflow;  edit_st f32_overflow "t['$L1.fc1.bias']=['F32',[768],f32([3.4028234e38]*768)]; t['$L1.fc1.weight']=['F32',[768,192],f32([1e36]*(768*192))]"
mkmodel f32_beyond_f16; edit_st f32_beyond_f16 "t['$L1.fc2.weight']=['F32',[192,768],f32([1e6]*(192*768))]"
mkmodel missing_tensor; edit_st missing_tensor "del t['$L1.fc2.weight']"
mkmodel wrong_shape;   edit_st wrong_shape "d,s,b=t['$L1.fc2.weight']; t['$L1.fc2.weight']=[d,[768,192],b]"
mkmodel truncated;     python3 -c "import sys;p=sys.argv[1];b=open(p,'rb').read();open(p,'wb').write(b[:len(b)//2])" "$M/truncated/model.safetensors"
mkmodel garbage_st;    head -c 4096 /dev/urandom > "$M/garbage_st/model.safetensors"
mkmodel empty_st;      : > "$M/empty_st/model.safetensors"
mkmodel no_weights;    rm "$M/no_weights/model.safetensors"
mkmodel no_config;     rm "$M/no_config/config.json"
mkmodel bad_json;      echo '{"model_type": "opt",' > "$M/bad_json/config.json"
mkmodel not_opt;       sed -i 's/"opt"/"llama"/' "$M/not_opt/config.json"
mkmodel bad_heads;     sed -i 's/"num_attention_heads": 3/"num_attention_heads": 5/' "$M/bad_heads/config.json"
mkmodel zero_layers;   sed -i 's/"num_hidden_layers": 6/"num_hidden_layers": 0/' "$M/zero_layers/config.json"
mkmodel gelu;          sed -i 's/"relu"/"gelu"/' "$M/gelu/config.json"
mkmodel no_tokenizer;  rm "$M/no_tokenizer/tokenizer.json" "$M/no_tokenizer/vocab.json" "$M/no_tokenizer/merges.txt"
mkmodel bad_tokenizer; echo '{"not": "a tokenizer"}' > "$M/bad_tokenizer/tokenizer.json"
mkmodel bad_index;     rm "$M/bad_index/model.safetensors"; echo '{"weight_map": {"a": "model-00001-of-00002.safetensors"}}' > "$M/bad_index/model.safetensors.index.json"
mkmodel index_no_map;  rm "$M/index_no_map/model.safetensors"; echo '{}' > "$M/index_no_map/model.safetensors.index.json"
mkmodel garbage_bin;   rm "$M/garbage_bin/model.safetensors"; head -c 2048 /dev/urandom > "$M/garbage_bin/pytorch_model.bin"
# Llama-family configs the tool does not implement (refused before any weight is read; the
# weights are links to the fixture's, never opened).
LLAMA=$SHARED/fixtures/llama-rand-gqa
mkllama() { # NAME PYTHON-EDIT of the config dict `c`
  rm -rf "$M/$1"; mkdir -p "$M/$1"
  cp "$LLAMA/tokenizer.json" "$LLAMA/tokenizer_config.json" "$M/$1/"; ln -s "$LLAMA/model.safetensors" "$M/$1/"
  python3 -c "import json,sys; c=json.load(open(sys.argv[1])); exec(sys.argv[2]); json.dump(c, open(sys.argv[3],'w'), indent=1)" \
    "$LLAMA/config.json" "$2" "$M/$1/config.json"
}
mkllama llama_yarn        "c['rope_parameters']={'rope_theta': 5e5, 'rope_type': 'yarn', 'factor': 4.0}"
mkllama llama_kv3         "c['num_key_value_heads']=3"
mkllama llama_moe         "c['num_local_experts']=8"
mkllama mistral_window    "c['model_type']='mistral'; c['sliding_window']=1024"
mkllama llama_gemma       "c['model_type']='gemma'"
mkllama llama_spm_only    "pass"; rm "$M/llama_spm_only/tokenizer.json"; echo sentencepiece > "$M/llama_spm_only/tokenizer.model"
mkmodel evil_pickle;   rm "$M/evil_pickle/model.safetensors"
python3 - "$M/evil_pickle/pytorch_model.bin" "$ROOT/PWNED" <<'EOF'
import os, pickle, sys, zipfile
class Evil:
    def __reduce__(self): return (os.system, (f"touch {sys.argv[2]}",))
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(Evil(), protocol=2))
EOF
mkdir -p "$ROOT/data_empty" "$ROOT/data_emptyfile/ptb"; : > "$ROOT/data_emptyfile/ptb/ptb.test.txt"
mkdir -p "$ROOT/data_short/wikitext2"; echo "a short corpus" > "$ROOT/data_short/wikitext2/wiki.test.raw"

# ---- files that lie about their contents, hostile sizes (issue 29) ----
cfg_set() { # NAME KEY JSON [SECTION]: config.json's KEY (in SECTION, e.g. quantization_config) set to JSON
  python3 - "$M/$1/config.json" "$2" "$3" "${4:-}" <<'EOF'
import json, sys
p, k, v, section = sys.argv[1:]
c = json.load(open(p))
(c[section] if section else c)[k] = json.loads(v)
json.dump(c, open(p, "w"))
EOF
}
mkfrom() { rm -rf "$M/$2"; cp -r "$M/$1" "$M/$2"; }
mkmodel layers_max;    cfg_set layers_max num_hidden_layers 18446744073709551615
mkmodel positions_max; cfg_set positions_max max_position_embeddings 18446744073709551615
mkmodel vocab_huge;    cfg_set vocab_huge vocab_size 1099511627776
mkmodel product_huge;  cfg_set product_huge max_position_embeddings 16777216; cfg_set product_huge hidden_size 8192; cfg_set product_huge num_attention_heads 1
mkmodel vocab_small;   cfg_set vocab_small vocab_size 1000
# Inputs the fuzz harness found panicking the tokenizers crate (tests/fuzz_findings).
mkmodel tok_found1;    cp tests/fuzz_findings/tokenizer_json_helper_panic_1.json "$M/tok_found1/tokenizer.json"
mkmodel tok_found2;    cp tests/fuzz_findings/tokenizer_json_helper_panic_2.json "$M/tok_found2/tokenizer.json"
pth() { # NAME KIND: pytorch_model.bin whose data.pkl is a hostile pickle of KIND
  mkmodel "$1"; rm "$M/$1/model.safetensors"
  python3 - "$M/$1/pytorch_model.bin" "$2" <<'EOF'
import sys, zipfile
path, kind = sys.argv[1:]
p = {"nested": b"\x80\x02N" + b"\x85" * 400000 + b".",
     "marks": b"\x80\x02" + b"(" * 5000 + b")" + b"t" * 5000 + b".",
     "memo": b"\x80\x02Nq\x00" + b"h\x00h\x00\x86q\x00" * 40 + b".",
     "string": b"\x80\x02X\xff\xff\xff\xff."}[kind]
with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", p)
    z.writestr("archive/version", "3\n")
EOF
}
pth pkl_nested nested; pth pkl_marks marks; pth pkl_memo memo; pth pkl_string string
# Packed exports of fixture B made by the binary, then made to disagree with their config.
"$BIN" prune "$FIX" --wbits 4 --groupsize 64 --act-order --act-groups dynamic --nsamples 1 --eval-datasets '' --json "$ROOT/x.json" \
  --save "$M/gptq_ao" --save-format gptq > /dev/null 2>&1 || echo "warning: no GPTQ export made" >&2
"$BIN" prune "$FIX" --wbits 4 --groupsize 64 --nsamples 1 --eval-datasets '' --json "$ROOT/x.json" \
  --save "$M/ct" --save-format compressed-tensors > /dev/null 2>&1 || echo "warning: no compressed-tensors export made" >&2
rm -f "$ROOT/x.json"
mkfrom gptq_ao no_g_idx;        edit_st no_g_idx "del t['$L1.fc1.g_idx']"
mkfrom gptq_ao scalar_qweight;  edit_st scalar_qweight "t['$L1.fc1.qweight']=['I32',[],bytearray(4)]"
mkfrom gptq_ao g_idx_2d;        edit_st g_idx_2d "d,s,b=t['$L1.fc1.g_idx']; t['$L1.fc1.g_idx']=[d,[16,12],b]"
mkfrom gptq_ao bits_wrap;       cfg_set bits_wrap bits 4294967300 quantization_config
mkfrom gptq_ao desc_act_false;  cfg_set desc_act_false desc_act false quantization_config
mkfrom ct ct_shape_wrap;        edit_st ct_shape_wrap "t['$L1.fc1.weight_shape']=['I64',[2],bytearray(struct.pack('<2q',768,1<<62))]; t['$L1.fc1.weight_packed']=['I32',[768,0],bytearray()]"
mkfrom ct ct_shape_2_61;        edit_st ct_shape_2_61 "t['$L1.fc1.weight_shape']=['I64',[2],bytearray(struct.pack('<2q',768,1<<61))]"
mkfrom ct ct_shape_neg;         edit_st ct_shape_neg "t['$L1.fc1.weight_shape']=['I64',[2],bytearray(struct.pack('<2q',-768,192))]"
mkfrom ct ct_scalar_packed;     edit_st ct_scalar_packed "t['$L1.fc1.weight_packed']=['I32',[],bytearray(4)]"
mkfrom ct ct_bits_wrap
python3 - "$M/ct_bits_wrap/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
for g in c["quantization_config"]["config_groups"].values(): g["weights"]["num_bits"] = 4294967300
json.dump(c, open(sys.argv[1], "w"))
EOF
# A hub cache holding a damaged copy of a model (truncated weights), read offline.
hub_cache_damaged() {
  local c=0123456789abcdef0123456789abcdef01234567 r=$ROOT/hf/hub/models--testorg--damaged
  rm -rf "$ROOT/hf"; mkdir -p "$r/refs" "$r/blobs" "$r/snapshots/$c"
  printf '%s' $c > "$r/refs/main"
  for f in config.json tokenizer.json model.safetensors; do
    if [ $f = model.safetensors ]; then head -c 100000 "$FIX/$f" > "$r/blobs/b_$f"; else cp "$FIX/$f" "$r/blobs/b_$f"; fi
    ln -s "../../blobs/b_$f" "$r/snapshots/$c/$f"
  done
}
# A hub cache of testorg/NAME: fixture B's config.json and tokenizer.json, and FILE (a weight
# file name) holding the bytes of SOURCE; read offline.
hub_cache_with() { # NAME FILE SOURCE
  local c=0123456789abcdef0123456789abcdef01234567 r=$ROOT/hf/hub/models--testorg--$1 f
  rm -rf "$ROOT/hf"; mkdir -p "$r/refs" "$r/blobs" "$r/snapshots/$c"
  printf '%s' $c > "$r/refs/main"
  for f in config.json tokenizer.json "$2"; do
    if [ "$f" = "$2" ]; then cp "$3" "$r/blobs/b_$f"; else cp "$FIX/$f" "$r/blobs/b_$f"; fi
    ln -s "../../blobs/b_$f" "$r/snapshots/$c/$f"
  done
}

# ---- the hub stand-in (checks/hub_standin.py): damaged downloads, refusals before weights ----
HUBDIR=$ROOT/hubrepos
mkdir -p "$HUBDIR/testorg"
python3 tests/helpers/write_pth.py "$FIX/model.safetensors" "$ROOT/good.bin" --strip-model-prefix
hubrepo() { # NAME BIN: testorg/NAME, fixture B's config and tokenizer with BIN as pytorch_model.bin
  mkdir -p "$HUBDIR/testorg/$1"; cp "$FIX/config.json" "$FIX/tokenizer.json" "$HUBDIR/testorg/$1/"
  cp "$2" "$HUBDIR/testorg/$1/pytorch_model.bin"
}
zip_cut_storage() { # IN OUT BYTES: a PyTorch zip whose first storage keeps only BYTES bytes
  python3 - "$1" "$2" "$3" <<'EOF'
import sys, zipfile
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
    for i in zi.infolist():
        b = zi.read(i.filename)
        zo.writestr(i.filename, b[:n] if i.filename.endswith("/data/0") else b)
EOF
}
hubrepo hub_good "$ROOT/good.bin"
head -c 200000 /dev/urandom > "$ROOT/junk.bin"; hubrepo hub_junk "$ROOT/junk.bin"
head -c $(( $(stat -c %s "$ROOT/good.bin") / 2 )) "$ROOT/good.bin" > "$ROOT/half.bin"; hubrepo hub_truncated "$ROOT/half.bin"
zip_cut_storage "$ROOT/good.bin" "$ROOT/lying.bin" 10; hubrepo hub_lying "$ROOT/lying.bin"
hubrepo hub_pkl_nested "$M/pkl_nested/pytorch_model.bin"
# Damaged on the way: one byte flipped, served under the good file's sha256.
python3 -c "import sys; b=bytearray(open(sys.argv[1],'rb').read()); b[len(b)//2]^=0x5a; open(sys.argv[2],'wb').write(b)" "$ROOT/good.bin" "$ROOT/flipped.bin"
hubrepo hub_transit "$ROOT/flipped.bin"
printf '{"pytorch_model.bin": "%s"}' "$(sha256sum < "$ROOT/good.bin" | cut -c1-64)" > "$HUBDIR/testorg/hub_transit/.etags.json"
# Issue 27's refused configs, served with their weights.
for n in llama_yarn llama_kv3 llama_moe mistral_window llama_spm_only; do cp -r "$M/$n" "$HUBDIR/testorg/hub_$n"; done
python3 checks/hub_standin.py "$HUBDIR" "$ROOT/hubport" & HUBPID=$!
for _ in $(seq 100); do [ -s "$ROOT/hubport" ] && break; sleep 0.1; done
HUBPORT=$(cat "$ROOT/hubport" 2>/dev/null) || { echo "error: the hub stand-in did not start" >&2; exit 2; }
# POSTCHECK functions for `run`: each prints what makes the case unclean, nothing when clean.
hub_kept() { # NAME: what the cache kept of testorg/NAME's pytorch_model.bin (link, blob or partial;
  # hf-hub's empty BLOB.lock holds none of its bytes)
  local e
  e=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('pytorch_model.bin',''))" "$HUBDIR/testorg/$1/.etags.json" 2>/dev/null)
  [ -n "$e" ] || e=$(sha256sum < "$HUBDIR/testorg/$1/pytorch_model.bin" | cut -c1-64)
  find "$ROOT/hf/hub/models--testorg--$1" \( -name pytorch_model.bin -o -name "$e" -o -name "$e.part" \) 2>/dev/null | sed "s|^$ROOT/hf/hub/|hub cache kept |" | tr '\n' ' '
}
weights_asked() { # NAME: the weight files testorg/NAME was asked for
  grep -o "testorg/$1/resolve/main/\(model.safetensors\|pytorch_model.bin\)" "$HUBDIR/requests.log" 2>/dev/null | sed 's/^/asked for /' | tr '\n' ' '
}

# ---- the table ----
UNCLEAN=0
N=0
row() { # EXPECT CASE EXIT FIRST LEFT OK
  local ok=$6
  [ "$ok" = yes ] || UNCLEAN=$((UNCLEAN + 1))
  N=$((N + 1))
  printf '| %d | %s | %s | %s | %s | %s |\n' "$N" "$2" "$3" "$(printf '%s' "$4" | sed 's/|/\\|/g' | cut -c1-220)" "$5" "$ok"
}

# run EXPECT CASE ARGS...: runs the binary with ARGS in the working folder and judges it.
# EXPECT: error (refused cleanly), note (a note line, then the error line).
run() {
  local expect=$1 name=$2; shift 2
  local before after rc err first lines left ok
  before=$(snap)
  (cd "$W" && timeout 600 env "${ENVPRE[@]}" "$BIN" "$@" > "$ROOT/out" 2> "$ROOT/err")
  rc=$?
  after=$(snap)
  err=$(grep -v '^[[:space:]]*$' "$ROOT/err")
  lines=$(printf '%s' "$err" | grep -c '' || true)
  first=$(printf '%s' "$err" | head -n 1)
  left=$(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | sed 's/^> [DFL] \.\//+ /; s/^< [DFL] \.\//- /; s/ [0-9a-f]\{16\}$//' | tr '\n' ' ')
  [ -n "$left" ] || left="nothing"
  ok=no
  case $expect in
    # A legal input: exit 0, no error line, nothing removed (only the run's outputs added).
    ok) [ "$rc" -eq 0 ] && ! grep -q '^error' "$ROOT/err" && [[ $left != *"- "* ]] && ok=yes ;;
    error) [ "$rc" -ne 0 ] && [ "$lines" -eq 1 ] && [[ $first == error:* ]] && [ "$left" = nothing ] && ok=yes ;;
    # A note line, then the error; the only change: the dead run's paths are gone.
    note) [ "$rc" -ne 0 ] && [ "$lines" -ge 2 ] && [[ $first == note:* ]] \
        && [ "$(printf '%s\n' "$err" | grep -vc '^note:')" -eq 1 ] && [[ $(printf '%s' "$err" | tail -n 1) == error:* ]] \
        && [ -z "$(printf '%s' "$left" | tr ' ' '\n' | grep -v '^-$' | grep -v '^$' | grep -v '4999999')" ] && ok=yes ;;
  esac
  grep -qi 'panicked\|backtrace' "$ROOT/err" && ok=no
  if [ -n "${POSTCHECK:-}" ]; then
    local bad; bad=$($POSTCHECK)
    [ -z "$bad" ] || { ok=no; left="$left ($bad)"; }
  fi
  [ -e "$ROOT/PWNED" ] && { ok=no; left="$left (pickle code ran!)"; }
  row "$expect" "$name" "$rc" "$first" "$left" "$ok"
  [ "$left" = nothing ] || pristine
}

# hub: run with a closed endpoint or offline, in a fresh HF_HOME
hub() { local name=$1 mode=$2; shift 2
  rm -rf "$ROOT/hf"
  if [ "$mode" = unreachable ]; then HF_ENDPOINT=http://127.0.0.1:9 HF_HUB_OFFLINE=0 run error "$name" "$@"
  else run error "$name" "$@"; fi
}

# standin CASE NAME [ARGS...]: eval testorg/NAME from the stand-in hub into a fresh HF_HOME;
# unclean if the cache keeps the refused pytorch_model.bin.
standin() { local name=$1 repo=$2; shift 2
  rm -rf "$ROOT/hf"
  POSTCHECK="hub_kept $repo" HF_ENDPOINT=http://127.0.0.1:$HUBPORT HF_HUB_OFFLINE=0 run error "$name" eval "testorg/$repo" --max-windows 1 "$@"
}

pristine
B=model
Q=(--nsamples 1 --max-windows 1 --eval-datasets wikitext2 --json r.json)
Q2=(--nsamples 1 --max-windows 1 --eval-datasets wikitext2)
echo "# Fault table"
echo
echo "\`checks/fault_table.sh\` on $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); binary: \`$(basename "$BIN")\` built from $(git rev-parse --short HEAD 2>/dev/null || echo '?'). Working folder: a copy of fixture opt-mini-b (\`model/\`), \`user/notes.txt\`, \`afile\`; 'left behind' lists what a case added (+) or removed (-) there."
echo
echo "| # | case | exit | first stderr line | left behind | clean |"
echo "|---|---|---|---|---|---|"

# -- command line (clap and the up-front checks) --
run error "no subcommand"
run error "unknown subcommand" compress $B
run error "unknown flag" prune $B --frobnicate
run error "prune without a model" prune
run error "eval without a model" eval
run error "--sparsity not a number" prune $B --sparsity half
run error "--sparsity 1.0" prune $B --sparsity 1.0 "${Q[@]}"
run error "--sparsity -0.1" prune $B --sparsity -0.1 "${Q[@]}"
run error "--sparsity NaN" prune $B --sparsity NaN "${Q[@]}"
run error "--prunen 4 --prunem 4" prune $B --prunen 4 --prunem 4 "${Q[@]}"
run error "--prunen 2 without --prunem" prune $B --prunen 2 "${Q[@]}"
run error "--prunen with --sparsity" prune $B --prunen 2 --prunem 4 --sparsity 0.5 "${Q[@]}"
run error "--prunem not dividing the width" prune $B --prunen 2 --prunem 5 "${Q[@]}"
run error "--prunen negative" prune $B --prunen -2 --prunem 4 "${Q[@]}"
run error "--wbits 9" prune $B --wbits 9 "${Q[@]}"
run error "--wbits 1" prune $B --wbits 1 "${Q[@]}"
run error "--wbits 0" prune $B --wbits 0 "${Q[@]}"
run error "--groupsize 0" prune $B --wbits 4 --groupsize 0 "${Q[@]}"
run error "--groupsize -5" prune $B --wbits 4 --groupsize -5 "${Q[@]}"
# A --groupsize not dividing a width is a short last group, as the published code quantizes it;
# only the format without one refuses it.
run error "--groupsize not dividing the width, saved as compressed-tensors" prune $B --wbits 4 --groupsize 100 "${Q[@]}" --save out --save-format compressed-tensors
run error "--nsamples 0" prune $B --nsamples 0 --json r.json
run error "--nsamples above the windows available" prune $B --nsamples 100000000 --json r.json
run error "--blocksize 0" prune $B --blocksize 0 "${Q[@]}"
run error "--percdamp 0" prune $B --percdamp 0 "${Q[@]}"
run error "--percdamp -1" prune $B --percdamp -1 "${Q[@]}"
run error "--percdamp NaN" prune $B --percdamp NaN "${Q[@]}"
run error "unknown calibration dataset" prune $B lambada "${Q[@]}"
run error "unknown --eval-datasets entry" prune $B --nsamples 1 --eval-datasets wikitext3 --json r.json
run error "unknown --datasets entry (eval)" eval $B --datasets wikitext2,lambada
run error "eval --datasets ''" eval $B --datasets ''
run error "--seed not a number" prune $B --seed x
run error "unknown --sampler" prune $B --sampler numpy
run error "unknown --device" eval $B --device tpu
run error "--device cuda in a CPU build" eval $B --device cuda --max-windows 1
run error "unknown --dtype" eval $B --dtype f8
run error "unknown --hinv-precision" prune $B --hinv-precision f16
run error "unknown --hessian-accumulation" prune $B --hessian-accumulation mean
run error "--target-avg-bits 1.5" prune $B --target-avg-bits 1.5 "${Q[@]}"
run error "--target-avg-bits 9" prune $B --target-avg-bits 9 "${Q[@]}"
run error "--n-groups 0" prune $B --target-avg-bits 4 --n-groups 0 "${Q[@]}"
run error "--n-groups 5000" prune $B --target-avg-bits 4 --n-groups 5000 "${Q[@]}"
run error "--n-groups not a number" prune $B --target-avg-bits 4 --n-groups many "${Q[@]}"
run error "--use-mi-grouping without --target-avg-bits" prune $B --use-mi-grouping 1 "${Q[@]}"
run error "--target-avg-bits 2.5 cannot pay for 10 groups" prune $B --target-avg-bits 2.5 --n-groups 10 "${Q[@]}"
run error "--min-bits above --max-bits" prune $B --target-avg-bits 4 --min-bits 6 --max-bits 3 "${Q[@]}"
run error "unknown --grouping" prune $B --target-avg-bits 4 --grouping louvain
run error "unknown --mi-method" prune $B --target-avg-bits 4 --mi-method kde
run error "unknown --bit-policy" prune $B --target-avg-bits 4 --bit-policy greedy
run error "--mi-method hist with --reservoir 0" prune $B --target-avg-bits 4 --use-mi-grouping 1 --mi-method hist --reservoir 0 "${Q[@]}"
run error "mi: unknown --linear" mi $B --layer 1 --linear fc3
run error "mi: --nsamples 0" mi $B --layer 1 --linear fc1 --nsamples 0
run error "mi: --layer 50 on a 6-layer model" mi $B --layer 50 --linear fc1 --nsamples 1 --out mi
run error "self-check on a CPU build" self-check
# -- runs that would compute nothing --
run error "--minlayer 3 --maxlayer 1" prune $B --minlayer 3 --maxlayer 1 "${Q[@]}"
run error "--minlayer 50 on a 6-layer model" prune $B --minlayer 50 "${Q[@]}"
run error "--maxlayer 0" prune $B --maxlayer 0 "${Q[@]}"
run error "--gmp with an empty layer range" prune $B --gmp --sparsity 0.5 --minlayer 6 "${Q[@]}"
run error "prune --max-windows 0" prune $B --nsamples 1 --max-windows 0 --json r.json
run error "eval --max-windows 0" eval $B --max-windows 0 --json r.json
run error "--seqlen 1" eval $B --seqlen 1 --max-windows 1 --json r.json
run error "--seqlen beyond the learned positions" prune $B --seqlen 4096 "${Q[@]}"
# -- model files --
run error "model directory missing" eval /nonexistent/opt-model
run error "model path is a file" eval afile
run error "no config.json" eval "$M/no_config"
run error "config.json not JSON" eval "$M/bad_json"
run error "config.json not OPT" eval "$M/not_opt"
run error "hidden size not divisible by heads" eval "$M/bad_heads"
run error "config with 0 layers" eval "$M/zero_layers" --max-windows 1
run error "activation not relu" eval "$M/gelu"
run error "llama: rope_type yarn" eval "$M/llama_yarn"
run error "llama: num_key_value_heads not dividing the heads" eval "$M/llama_kv3"
run error "llama: mixture-of-experts keys" eval "$M/llama_moe"
run error "mistral: sliding_window shorter than the windows" eval "$M/mistral_window"
run error "unknown model_type" eval "$M/llama_gemma"
run error "tokenizer.model without tokenizer.json" eval "$M/llama_spm_only"
run error "llama (bf16) saved as gptq without --save-dtype f16" prune "$LLAMA" c4 --wbits 4 "${Q[@]}" --save out --save-format gptq
run error "--save-dtype bf16 while computing in f16" prune "$LLAMA" c4 --wbits 4 --dtype f16 --save-dtype bf16 "${Q[@]}" --save out --save-format compressed-tensors
run error "llama as compressed-tensors, --groupsize 128 not dividing 704" prune "$LLAMA" c4 --wbits 4 --groupsize 128 "${Q[@]}" --save out --save-format compressed-tensors
run error "--save-dtype without --save" prune $B --wbits 4 --save-dtype f16 "${Q[@]}"
run error "no weight file" eval "$M/no_weights"
run error "truncated model.safetensors" eval "$M/truncated"
run error "model.safetensors of random bytes" eval "$M/garbage_st"
run error "empty model.safetensors" eval "$M/empty_st"
run error "a tensor missing" eval "$M/missing_tensor"
run error "a tensor of the wrong shape" eval "$M/wrong_shape"
run error "index.json naming a missing shard" eval "$M/bad_index"
run error "index.json without weight_map" eval "$M/index_no_map"
run error "pytorch_model.bin of random bytes" eval "$M/garbage_bin"
run error "malicious pickle (os.system in __reduce__)" eval "$M/evil_pickle"
run error "no tokenizer files" eval "$M/no_tokenizer"
run error "tokenizer.json not a tokenizer" eval "$M/bad_tokenizer"
# -- data --
run error "--data-dir missing" eval $B --data-dir /nonexistent/data
run error "--data-dir without the PTB file" eval $B --datasets ptb --data-dir "$ROOT/data_empty"
run error "--data-dir without C4 calibration files" prune $B --nsamples 1 --eval-datasets '' --data-dir "$ROOT/data_empty" --json r.json
run error "empty PTB test file" eval $B --datasets ptb --data-dir "$ROOT/data_emptyfile"
run error "corpus shorter than one window" eval $B --datasets wikitext2 --data-dir "$ROOT/data_short"
run error "--data-dir is a file" eval $B --data-dir afile
# -- zero-shot tasks (issue 28): refused before any model is loaded --
TASKS=$(realpath tests/data)
mkdir -p "$ROOT/data_tasks/tasks"
cp "$TASKS/tasks/arc_easy.parquet" "$ROOT/data_tasks/tasks/piqa.parquet"
run error "unknown task (eval --tasks)" eval $B --tasks piqa,mmlu --data-dir "$TASKS"
run error "unknown task (prune --eval-tasks)" prune $B --nsamples 1 --eval-tasks mmlu --json r.json
run error "task file lacking fields (an ARC file as piqa.parquet)" eval $B --tasks piqa --data-dir "$ROOT/data_tasks"
run error "data dir without the task's file" eval $B --tasks boolq --data-dir "$ROOT/data_tasks"
run error "eval --tasks piqa --limit 0" eval $B --tasks piqa --limit 0 --data-dir "$TASKS"
run error "--limit without --tasks" eval $B --limit 5 --max-windows 1
# -- hub --
hub "hub unreachable (model)" unreachable eval facebook/opt-125m
hub "hub offline, cold cache (model)" offline eval facebook/opt-125m
ENVPRE=(-u SPARSEGPT_MI_DATA_DIR)
hub "hub unreachable (data, before any model)" unreachable eval $B --max-windows 1
hub "hub offline, cold cache (data)" offline eval $B --max-windows 1
hub "hub offline, cold cache (task file)" offline eval $B --tasks rte
ENVPRE=()
hub "hub id that is not org/name" unreachable eval facebook/opt/125m
# -- output paths (checked before any work) --
run error "--save onto a non-empty folder of the user's" prune $B "${Q[@]}" --save user
run error "--save onto the user's folder, trailing /" prune $B "${Q[@]}" --save user/
run error "--save onto the input model's directory" prune $B "${Q[@]}" --save model
run error "--save onto the model's directory with --overwrite" prune $B "${Q[@]}" --save model --overwrite
run error "--save onto the model via model/../model" prune $B "${Q[@]}" --save model/../model --overwrite
ln -s model "$W/link"
run error "--save onto the model through a symlink" prune link "${Q[@]}" --save model --overwrite
run error "--save onto a symlink" prune $B "${Q[@]}" --save link --overwrite
rm "$W/link"
run error "--save onto the folder holding the model" prune "$W/model" "${Q[@]}" --save "$W" --overwrite
run error "--save ." prune $B "${Q[@]}" --save .
run error "--save .." prune $B "${Q[@]}" --save .. --overwrite
run error "--save /" prune $B "${Q[@]}" --save / --overwrite
run error "--save onto a file" prune $B "${Q[@]}" --save afile
run error "--save under a file" prune $B "${Q[@]}" --save afile/out
run error "--save under /proc" prune $B "${Q[@]}" --save /proc/forbidden/out
run error "--save under /sys (read-only)" prune $B "${Q[@]}" --save /sys/out
run error "--overwrite without --save" prune $B "${Q[@]}" --overwrite
run error "--json onto an existing directory" prune $B --nsamples 1 --max-windows 1 --eval-datasets wikitext2 --json user
run error "--json ." prune $B --nsamples 1 --json .
run error "--json .." prune $B --nsamples 1 --json ..
run error "--json ending in /" prune $B --nsamples 1 --json new/
run error "--json under a file" prune $B --nsamples 1 --json afile/r.json
run error "--json under /proc" prune $B --nsamples 1 --json /proc/forbidden/r.json
run error "--json under /sys (read-only)" prune $B --nsamples 1 --json /sys/r.json
run error "--json /dev/null (not a regular file)" prune $B --nsamples 1 --json /dev/null
run error "eval --json onto a directory" eval $B --json user
run error "eval --logits-out onto a directory" eval $B --logits-out user
run error "eval --logits-out under a file" eval $B --logits-out afile/l.json
run error "eval --logits-out under /proc" eval $B --logits-out /proc/l.json
run error "mi --out is a file" mi $B --layer 1 --linear fc1 --nsamples 1 --out afile
run error "mi --out under a file" mi $B --layer 1 --linear fc1 --nsamples 1 --out afile/mi
run error "mi --out under /proc" mi $B --layer 1 --linear fc1 --nsamples 1 --out /proc/mi
run error "mi --out under /sys (read-only)" mi $B --layer 1 --linear fc1 --nsamples 1 --out /sys/mi
mkdir -p "$W/mi/mi_L1_fc1.json"
run error "mi: a directory where its JSON goes" mi $B --layer 1 --linear fc1 --nsamples 1 --out mi
pristine
# -- files that lie about their sizes: checked arithmetic and limits (issue 29) --
run error "num_hidden_layers 2^64-1 (eval)" eval "$M/layers_max" --max-windows 1
run error "num_hidden_layers 2^64-1 (prune)" prune "$M/layers_max" "${Q[@]}"
run error "max_position_embeddings 2^64-1" eval "$M/positions_max" --max-windows 1
run error "vocab_size 2^40" eval "$M/vocab_huge" --max-windows 1
run error "positions x hidden beyond the tensor limit" eval "$M/product_huge" --max-windows 1
run error "vocab_size below the tokenizer's ids (eval)" eval "$M/vocab_small" --max-windows 1
run error "vocab_size below the tokenizer's ids (prune)" prune "$M/vocab_small" "${Q[@]}"
run error "tokenizer.json the fuzzer found panicking tokenizers (1)" eval "$M/tok_found1" --max-windows 1
run error "tokenizer.json the fuzzer found panicking tokenizers (2)" eval "$M/tok_found2" --max-windows 1
# -- pickles: recursion and allocation refused before candle reads them --
run error "pytorch_model.bin: 400 KB of nested tuples" eval "$M/pkl_nested" --max-windows 1
run error "pytorch_model.bin: 5000 MARK-nested tuples" eval "$M/pkl_marks" --max-windows 1
run error "pytorch_model.bin: a tuple doubled 40 times through the memo" eval "$M/pkl_memo" --max-windows 1
run error "pytorch_model.bin: a 4 GiB string in a 10-byte pickle" eval "$M/pkl_string" --max-windows 1
# -- packed exports whose config and tensors disagree --
run error "GPTQ act-order export without a g_idx" eval "$M/no_g_idx" --max-windows 1
run error "GPTQ 0-dimensional qweight" eval "$M/scalar_qweight" --max-windows 1
run error "GPTQ g_idx of two dimensions" eval "$M/g_idx_2d" --max-windows 1
run error "GPTQ bits 2^32+4 (would truncate to 4)" eval "$M/bits_wrap" --max-windows 1
run error "GPTQ act-order g_idx with desc_act false" eval "$M/desc_act_false" --max-windows 1
run error "compressed-tensors weight_shape [768, 2^62], empty weight_packed" eval "$M/ct_shape_wrap" --max-windows 1
run error "compressed-tensors weight_shape [768, 2^61] (prune)" prune "$M/ct_shape_2_61" "${Q[@]}"
run error "compressed-tensors weight_shape [-768, 192]" eval "$M/ct_shape_neg" --max-windows 1
run error "compressed-tensors 0-dimensional weight_packed" eval "$M/ct_scalar_packed" --max-windows 1
run error "compressed-tensors num_bits 2^32+4" eval "$M/ct_bits_wrap" --max-windows 1
# -- a damaged model copy in the hub cache: named with the command that clears it --
hub_cache_damaged
run error "hub cache copy of model.safetensors truncated (offline)" eval testorg/damaged --max-windows 1
python3 - "$FIX/model.safetensors" "$ROOT/shape.safetensors" <<'EOF'
import json, struct, sys
raw = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", raw[:8])[0]; h = json.loads(raw[8:8 + n])
k = "model.decoder.layers.1.fc1.weight"; h[k]["shape"] = [h[k]["shape"][0] * 2, h[k]["shape"][1]]
out = json.dumps(h).encode(); out += b" " * (-len(out) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(out)) + out + raw[8 + n:])
EOF
hub_cache_with damaged model.safetensors "$ROOT/shape.safetensors"
run error "hub cache copy of model.safetensors whose header lies about a shape (offline)" eval testorg/damaged --max-windows 1
hub_cache_with damaged pytorch_model.bin "$ROOT/half.bin"
run error "hub cache copy of pytorch_model.bin truncated (offline)" eval testorg/damaged --max-windows 1
hub_cache_with damaged pytorch_model.bin "$ROOT/lying.bin"
run error "hub cache copy of pytorch_model.bin with a lying tensor record (offline)" eval testorg/damaged --max-windows 1
hub_cache_with damaged pytorch_model.bin "$ROOT/good.bin"; head -c 5000 "$FIX/tokenizer.json" > "$ROOT/hf/hub/models--testorg--damaged/blobs/b_tokenizer.json"
run error "hub cache copy of tokenizer.json cut short (offline)" eval testorg/damaged --max-windows 1
# -- downloads from the hub stand-in: verified (LFS sha256, structure) before use, never kept damaged --
standin "pytorch_model.bin of random bytes at the hub" hub_junk
standin "pytorch_model.bin truncated at the hub" hub_truncated
standin "pytorch_model.bin whose tensor record outgrows its storage, at the hub" hub_lying
standin "pytorch_model.bin damaged on the way (served under the good sha256)" hub_transit
standin "pytorch_model.bin of 400 KB nested tuples at the hub" hub_pkl_nested
rm -rf "$ROOT/hf"
HF_ENDPOINT=http://127.0.0.1:$HUBPORT HF_HUB_OFFLINE=0 run ok "intact pytorch_model.bin from the hub: loads" eval testorg/hub_good --max-windows 1 --datasets wikitext2
# -- issue 27's refused configs at the hub: one line, before any weight is asked for --
for n in "llama_yarn|rope_type yarn" "llama_kv3|num_key_value_heads not dividing the heads" "llama_moe|mixture-of-experts keys" \
         "mistral_window|sliding_window shorter than the windows" "llama_spm_only|tokenizer.model without tokenizer.json"; do
  rm -rf "$ROOT/hf"
  POSTCHECK="weights_asked hub_${n%%|*}" HF_ENDPOINT=http://127.0.0.1:$HUBPORT HF_HUB_OFFLINE=0 \
    run error "hub: ${n#*|}, before any weight download" eval "testorg/hub_${n%%|*}"
done
rm -rf "$ROOT/hf"
# A cached WikiText-2 file the fuzz campaign found breaking the parquet crate: removed, not kept.
c=0123456789abcdef0123456789abcdef01234567; r=$ROOT/hf/hub/datasets--Salesforce--wikitext
rm -rf "$ROOT/hf"; mkdir -p "$r/refs" "$r/snapshots/$c/wikitext-2-raw-v1"; printf '%s' $c > "$r/refs/main"
cp tests/fuzz_findings/parquet_negative_column_start.parquet "$r/snapshots/$c/wikitext-2-raw-v1/test-00000-of-00001.parquet"
ENVPRE=(-u SPARSEGPT_MI_DATA_DIR)
run error "hub cache parquet that breaks the parquet reader (offline)" eval $B --datasets wikitext2 --max-windows 1
run error "the same, next run: the file is gone, named as missing" eval $B --datasets wikitext2 --max-windows 1
ENVPRE=()
rm -rf "$ROOT/hf"
# -- output collisions, refused before any work --
run error "--json res --save res" prune $B "${Q2[@]}" --json res --save res
run error "--json res --save res/model" prune $B "${Q2[@]}" --json res --save res/model
run error "--json out/r.json --save out" prune $B "${Q2[@]}" --json out/r.json --save out
run error "--json a/../res --save res" prune $B "${Q2[@]}" --json a/../res --save res
run error "--json ./model/../res --save res --overwrite" prune $B "${Q2[@]}" --json ./model/../res --save res --overwrite
run error "eval --json x --logits-out x" eval $B --max-windows 1 --json x --logits-out x
run error "eval --json x --logits-out ./x" eval $B --max-windows 1 --json x --logits-out ./x
run error "eval --json x --logits-out x/l.json" eval $B --max-windows 1 --json x --logits-out x/l.json
run error "eval --json onto the model's config.json" eval $B --max-windows 1 --json model/config.json
run error "prune --json onto the model's tokenizer.json" prune $B "${Q2[@]}" --json model/tokenizer.json
run error "--save a mount point (/dev/shm)" prune $B "${Q[@]}" --save /dev/shm --overwrite
run error "--save a mount point (/proc)" prune $B "${Q[@]}" --save /proc --overwrite
run error "--save a directory holding a mount point (/sys/fs)" prune $B "${Q[@]}" --save /sys/fs --overwrite
# -- names near NAME_MAX: the tool's temporary names fit --
N255=$(printf 'r%.0s' $(seq 250)).json
S255=$(printf 's%.0s' $(seq 255))
run ok "--json of a 255-byte name" eval $B --max-windows 1 --datasets wikitext2 --json "$N255"
run ok "--save of a 255-byte name" prune $B --nsamples 1 --eval-datasets '' --json r.json --save "$S255"
run ok "--logits-out of a 255-byte name" eval $B --max-windows 1 --datasets wikitext2 --logits-out "$N255"
run error "--json of a 256-byte name" eval $B --max-windows 1 --json "x$N255"
run error "--save of a 256-byte name" prune $B "${Q[@]}" --save "x$S255"
# -- choices that would make the run impossible, refused up front --
run error "--n-groups auto, --target-avg-bits 2.05" prune $B --target-avg-bits 2.05 --n-groups auto "${Q[@]}"
run error "--n-groups auto, --target-avg-bits 2.1" prune $B --target-avg-bits 2.1 --n-groups auto "${Q[@]}"
run error "--n-groups auto, --target-avg-bits 3 --min-bits 3" prune $B --target-avg-bits 3 --min-bits 3 --n-groups auto "${Q[@]}"
pristine
# -- non-finite numbers --
run error "NaN row in layer 1 fc1 (eval)" eval "$M/nan_fc1_row" --max-windows 1 --datasets wikitext2 --json r.json
run error "NaN row in layer 1 fc1 (prune --save)" prune "$M/nan_fc1_row" "${Q[@]}" --sparsity 0.5 --save out
run error "Inf in layer 3 q_proj (prune)" prune "$M/inf_q_proj" "${Q[@]}" --sparsity 0.5
run error "NaN in the token embeddings (eval)" eval "$M/nan_embed" --max-windows 1 --json r.json
run error "NaN in the final layer norm (eval)" eval "$M/nan_ln_bias" --max-windows 1 --json r.json
run error "f32 weights beyond f16 in an f16 run" eval "$M/f32_beyond_f16" --dtype f16 --max-windows 1 --json r.json
run error "overflowing activations: prune (Hessian)" prune "$M/f32_overflow" "${Q[@]}" --sparsity 0.5 --save out
run error "overflowing activations: uncompressed layer" prune "$M/f32_overflow" "${Q[@]}" --sparsity 0.5 --minlayer 2
run error "overflowing activations: eval PPL" eval "$M/f32_overflow" --max-windows 1 --datasets wikitext2 --json r.json
run error "overflowing activations: --logits-out" eval "$M/f32_overflow" --max-windows 1 --datasets wikitext2 --logits-out l.json

# -- signals and stale temporaries --
signal_case() { # NAME SIGNAL WHEN(save|early) EXPECTED-EXIT
  local name=$1 sig=$2 when=$3 want=$4 before after rc first left ok pid tries=0
  before=$(snap)
  while :; do
    tries=$((tries + 1))
    # Mid-run: a run of several seconds (16 calibration windows) signalled after 1.5 s.
    local n=1; [ "$when" = save ] || n=16
    (cd "$W" && exec "$BIN" prune $B --nsamples $n --eval-datasets '' --json r.json --save out > /dev/null 2> "$ROOT/err") &
    pid=$!
    if [ "$when" = save ]; then
      while kill -0 $pid 2>/dev/null && [ ! -e "$W/.out.partial$pid" ]; do sleep 0.001; done
      kill -STOP $pid 2>/dev/null
      if [ ! -e "$W/.out.partial$pid" ] && [ $tries -lt 5 ]; then
        kill -CONT $pid 2>/dev/null; wait $pid; pristine; before=$(snap); continue
      fi
      kill -"$sig" $pid; kill -CONT $pid
    else
      sleep 1.5; kill -"$sig" $pid
    fi
    wait $pid; rc=$?
    break
  done
  after=$(snap)
  first=$(grep -v '^[[:space:]]*$' "$ROOT/err" | head -n 1)
  left=$(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | sed 's/^> [DFL] \.\//+ /; s/^< [DFL] \.\//- /; s/ [0-9a-f]\{16\}$//' | tr '\n' ' ')
  [ -n "$left" ] || left="nothing"
  ok=no
  [ "$rc" -eq "$want" ] && [[ $first == "error: interrupted"* ]] && [ "$left" = nothing ] && ok=yes
  row signal "$name" "$rc" "$first" "$left" "$ok"
  [ "$left" = nothing ] || pristine
}
signal_case "SIGINT (Ctrl-C) while --save writes" INT save 130
signal_case "SIGTERM while --save writes" TERM save 143
signal_case "SIGINT mid-run, before any output" INT early 130
signal_case "SIGTERM mid-run, before any output" TERM early 143
mkdir "$W/.out.partial4999999"; echo '{}' > "$W/.out.partial4999999/.sparsegpt-mi-export"; echo '{"half' > "$W/.r.json.tmp4999999"
run note "stale .out.partialPID / .r.json.tmpPID of a dead run: removed, with a note" prune $B --minlayer 9 --nsamples 1 --json r.json --save out
# The stale pair is gone: what 'left behind' shows above is their removal, and nothing else.

# -- what a successful run leaves --
(cd "$W" && umask 022 && "$BIN" prune $B --nsamples 1 --eval-datasets '' --sparsity 0.5 --json r.json --save out > /dev/null 2> "$ROOT/err"); rc=$?
modes=$(cd "$W" && stat -c '%a %n' out out/* out/.sparsegpt-mi-export r.json | awk '{print $1}' | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
bad=$(cd "$W" && { find out -type f ! -perm 644; find out -type d ! -perm 755; find r.json ! -perm 644; } | tr '\n' ' ')
ok=no; [ "$rc" -eq 0 ] && [ -z "$bad" ] && ok=yes
row ok "saved files' modes under umask 022 (were 0600 and 0444)" "$rc" "modes: $modes" "out/ (the export), r.json" "$ok"
echo "user edit" > "$W/out/README.md"
run error "--save onto a previous export holding a file the user added" prune $B "${Q[@]}" --save out
rm "$W/out/README.md"
(cd "$W" && "$BIN" prune $B --nsamples 1 --eval-datasets '' --sparsity 0.6 --json r.json --save out > /dev/null 2> "$ROOT/err"); rc=$?
extra=$(cd "$W" && ls -A | grep '^\.' | tr '\n' ' ')
ok=no; [ "$rc" -eq 0 ] && [ -z "$extra" ] && ok=yes
row ok "--save onto its own previous export: replaced" "$rc" "$(head -n1 "$ROOT/err")" "out/ replaced; temporaries: ${extra:-none}" "$ok"
pristine

# -- thread-count determinism --
for n in 1 2 4; do
  (cd "$W" && RAYON_NUM_THREADS=$n "$BIN" prune $B c4 --sparsity 0.5 --wbits 4 --target-avg-bits 4.0 --use-mi-grouping 1 --n-groups 10 --nsamples 4 --max-windows 1 --eval-datasets wikitext2 --json "r$n.json" --save "s$n" > /dev/null 2>&1)
done
hashes=$(cd "$W" && for n in 1 2 4; do sha256sum < "s$n/model.safetensors" | cut -c1-12; done | sort -u | tr '\n' ' ')
same_json=$(cd "$W" && python3 - <<'EOF'
import json
def strip(v):
    if isinstance(v, dict): return {k: strip(x) for k, x in v.items() if not (k.endswith("_s") or k.endswith("seconds") or k in ("peak_rss_mib", "command", "json", "save", "dir"))}
    if isinstance(v, list): return [strip(x) for x in v]
    return v
a = [strip(json.load(open(f"r{n}.json"))) for n in (1, 2, 4)]
print("same" if a[0] == a[1] == a[2] else "differ")
EOF
)
ok=no; [ "$(echo $hashes | wc -w)" -eq 1 ] && [ "$same_json" = same ] && ok=yes
row ok "MI prune at RAYON_NUM_THREADS 1, 2, 4 (fixture B, 4 windows)" 0 "model sha256: $hashes; JSON (timings aside): $same_json" "r{1,2,4}.json, s{1,2,4}/" "$ok"

echo
echo "$N cases, $UNCLEAN unclean."
[ "$UNCLEAN" -eq 0 ]
