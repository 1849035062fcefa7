#!/usr/bin/env bash
# The documentation against the programs, so that it cannot drift unnoticed:
#   - every manual page in docs/man renders with no groff warning, its .TH
#     matches its file name, and `man -l` formats it;
#   - every command and option that `hastnbd-ctl --help` shows is in
#     hastnbd-ctl.8 (each command as an item of COMMANDS), every option that
#     `hastnbd --help` shows is in the OPTIONS of hastnbd.8;
#   - every configuration key the parser accepts is an item of hastnbd.yaml.5
#     and appears in docs/config.md. The keys come from the parser itself:
#     a file with an unknown key is refused with the list of the keys known
#     at that place, asked at each level and inside every key that is a map;
#   - every relative link in README.md and docs/*.md names an existing file,
#     and every #anchor a heading of the file it points into;
#   - docs/design.md's table "What each file owns" names every source file
#     and header of src/ and include/hastnbd/ (as LAYER/NAME), its "Layout"
#     table every layer folder, and docs/states.svg is what Graphviz renders
#     from docs/states.dot.
# Options in the pages must be written \- (ASCII hyphen-minus when rendered):
# the pages are searched as rendered for UTF-8, where a bare - is a hyphen.
source "$(dirname "$0")/lib.sh"
require_cmd groff man
[ -x "$HASTNBD_BIN/hastnbd" ] && [ -x "$HASTNBD_BIN/hastnbd-ctl" ] || die "no binaries in $HASTNBD_BIN"

MAN_DIR="$HASTNBD_SRC/docs/man"
PAGES=(hastnbd.8 hastnbd-ctl.8 hastnbd.yaml.5)

# --- the pages render cleanly ------------------------------------------------------

for p in "${PAGES[@]}"; do
  [ -f "$MAN_DIR/$p" ] || die "docs/man/$p is missing"
done
for f in "$MAN_DIR"/*; do
  p="$(basename "$f")"
  [[ " ${PAGES[*]} " == *" $p "* ]] || die "docs/man/$p is not one of the pages this test checks (${PAGES[*]}); add it to PAGES"
  warnings="$(groff -man -Tutf8 -ww -z "$f" 2>&1)" || die "groff failed on $p: $warnings"
  [ -z "$warnings" ] || die "groff warns about $p:"$'\n'"$warnings"
  # .TH NAME SECTION: the name (as rendered) and section match the file.
  th="$(sed -n 's/^\.TH  *\([^ ]*\)  *\([0-9]\).*/\1 \2/p' "$f" | head -n 1)"
  [ "$(printf '%s' "${th% *}" | sed 's/\\-/-/g' | tr 'A-Z' 'a-z') ${th#* }" = "${p%.*} ${p##*.}" ] \
    || die "$p: .TH says '$th', the file name says '${p%.*} ${p##*.}'"
  # An option written with a bare - may render as a hyphen (U+2010) that
  # cannot be pasted into a shell: options are written \-.
  bare="$(grep -vn '^\.\\"' "$f" | grep -E '(^|[^\\[:alnum:]_-])--?[A-Za-z]' || true)"
  [ -z "$bare" ] || die "$p: option-like words with a bare '-' (write '\-'):"$'\n'"$bare"
  MANWIDTH=80 MANPAGER=cat PAGER=cat man -l "$f" >"$T/$p.man" 2>"$T/$p.man.err" \
    || die "man -l $p failed: $(cat "$T/$p.man.err")"
  grep -q '^NAME' "$T/$p.man" && grep -q '^SEE ALSO' "$T/$p.man" || die "man -l $p: no NAME or SEE ALSO section"
  groff -man -Tutf8 -P-cbou "$f" >"$T/$p.txt" 2>/dev/null || die "groff could not render $p as text"
done

# --- the programs' --help against the pages ------------------------------------------

"$HASTNBD_BIN/hastnbd-ctl" --help >"$T/ctl.help" || die "hastnbd-ctl --help failed"
"$HASTNBD_BIN/hastnbd" --help >"$T/daemon.help" || die "hastnbd --help failed"

"$HASTNBD_PYTHON" - "$T" <<'EOF' || die "the manual pages miss what the programs' --help shows (above)"
import re, sys
T = sys.argv[1]
def read(name):
    with open(f"{T}/{name}", encoding="utf-8") as f:
        return f.read()

def section(text, title):
    """The lines of one top-level section of a rendered page."""
    out, inside = [], False
    for line in text.splitlines():
        if re.fullmatch(r"[A-Z][A-Z ]*", line):
            inside = line == title
            continue
        if inside:
            out.append(line)
    return out

def options(help_text):
    return sorted(set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text)))

def has_token(lines, token):
    pattern = re.compile(r"(?<![\w-])" + re.escape(token) + r"(?![\w-])")
    return any(pattern.search(l) for l in lines)

missing = []
ctl_help = read("ctl.help")
ctl = read("hastnbd-ctl.8.txt")
commands = []
in_commands = False
for line in ctl_help.splitlines():
    if line.startswith("Commands:"):
        in_commands = True
    elif in_commands:
        m = re.match(r"  ([a-z][a-z-]*)", line)
        if m:
            commands.append(m.group(1))
if len(commands) < 5:
    missing.append(f"could not read the commands from `hastnbd-ctl --help` (found {commands})")
items = section(ctl, "COMMANDS")
for c in sorted(set(commands)):
    if not any(re.match(r"\s+" + re.escape(c) + r"(\s|$)", l) for l in items):
        missing.append(f"hastnbd-ctl.8: command '{c}' is not an item of COMMANDS")
for o in options(ctl_help):
    if not has_token(section(ctl, "OPTIONS"), o):
        missing.append(f"hastnbd-ctl.8: option '{o}' is not in OPTIONS")

daemon_help = read("daemon.help")
daemon_opts = options(daemon_help)
if "--help" not in daemon_opts or len(daemon_opts) < 4:
    missing.append(f"could not read the options from `hastnbd --help` (found {daemon_opts})")
for o in daemon_opts:
    if not has_token(section(read("hastnbd.8.txt"), "OPTIONS"), o):
        missing.append(f"hastnbd.8: option '{o}' is not in OPTIONS")

for m in missing:
    print("  " + m, file=sys.stderr)
sys.exit(1 if missing else 0)
EOF
log "manual pages: render cleanly; every command and option of --help documented"

# --- every configuration key ---------------------------------------------------------

BOGUS=zz_no_such_key_zz  # 16 letters: no known key is within the 2 edits of a suggestion
# known_keys YAML: the keys the parser lists when it refuses $BOGUS in YAML.
known_keys() {
  local out rc=0
  printf '%s\n' "$1" >"$T/keys.yaml"
  out="$("$HASTNBD_BIN/hastnbd-ctl" -c "$T/keys.yaml" list 2>&1)" || rc=$?
  [ "$rc" -eq 2 ] || die "a file with an unknown key was not refused (exit $rc): $out"
  [[ "$out" =~ unknown\ key\ \(known\ keys:\ ([^\)]*)\) ]] \
    || die "cannot read the known keys from: $out"
  tr -d ' ' <<<"${BASH_REMATCH[1]}" | tr ',' '\n'
}
RES='resources: {r: {nodes: {n: {local: /dev/null}}}}'
mapfile -t top < <(known_keys "$BOGUS: 1")
mapfile -t settings < <(known_keys "defaults: {$BOGUS: 1}"$'\n'"$RES")
mapfile -t in_resource < <(known_keys "resources: {r: {$BOGUS: 1}}")
[[ " ${top[*]} " == *" resources "* ]] || die "top-level keys without 'resources': ${top[*]}"
[[ " ${settings[*]} " == *" local "* ]] || die "setting keys without 'local': ${settings[*]}"
keys=("${top[@]}" "${in_resource[@]}")
# A setting that is a map refuses $BOGUS inside it with its own keys; any
# other answers with a type error.
for k in "${settings[@]}"; do
  printf '%s\n' "defaults: {$k: {$BOGUS: 1}}" "$RES" >"$T/keys.yaml"
  out="$("$HASTNBD_BIN/hastnbd-ctl" -c "$T/keys.yaml" list 2>&1)" || true
  if [[ "$out" == *"unknown key (known keys:"* ]]; then
    mapfile -t sub < <(known_keys "defaults: {$k: {$BOGUS: 1}}"$'\n'"$RES")
    for s in "${sub[@]}"; do keys+=("$k.$s"); done
  fi
done
mapfile -t keys < <(printf '%s\n' "${keys[@]}" | sort -u)
[ "${#keys[@]}" -ge 25 ] || die "only ${#keys[@]} configuration keys found: ${keys[*]}"

missing=()
for k in "${keys[@]}"; do
  # hastnbd.yaml.5: an item (a tag line) per key; docs/config.md: `key`
  # (or `key: ...`, as a map like `metrics: {listen: ...}` is written).
  grep -Eq "^ +${k//./\\.}( |$)" "$T/hastnbd.yaml.5.txt" || missing+=("hastnbd.yaml.5: no item for '$k'")
  grep -Eq "\`${k//./\\.}(\`|: )" "$HASTNBD_SRC/docs/config.md" \
    || missing+=("docs/config.md: '$k' never appears as \`$k\` or \`$k: ...\`")
done
[ "${#missing[@]}" -eq 0 ] || die "configuration keys not documented:"$'\n'"$(printf '  %s\n' "${missing[@]}")"
log "configuration: all ${#keys[@]} keys the parser accepts are in hastnbd.yaml.5 and docs/config.md"

# --- relative links in the Markdown documents -----------------------------------------

"$HASTNBD_PYTHON" - "$HASTNBD_SRC" <<'EOF' || die "broken links in the Markdown documents (above)"
import glob, os, re, sys
src = sys.argv[1]
files = [os.path.join(src, "README.md")] + sorted(glob.glob(os.path.join(src, "docs", "*.md")))

def strip_code(text):
    """Fenced blocks and inline code spans hold no links or headings."""
    out, fence = [], None
    for line in text.splitlines():
        m = re.match(r"\s*(```+|~~~+)", line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            out.append("")
            continue
        if m:
            fence = m.group(1)
            out.append("")
            continue
        out.append(re.sub(r"(`+).*?\1", "", line))
    return out

def anchors(path):
    """GitHub's heading ids: lower case, punctuation dropped, spaces to -."""
    seen, ids = {}, set()
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    fence = None
    for line in raw.splitlines():
        m = re.match(r"\s*(```+|~~~+)", line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        h = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not h:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h.group(1)).lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids

bad = []
link = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
refdef = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(\s|$)")
for path in files:
    with open(path, encoding="utf-8") as f:
        lines = strip_code(f.read())
    for n, line in enumerate(lines, 1):
        targets = link.findall(line)
        m = refdef.match(line)
        if m:
            targets.append(m.group(1))
        for t in targets:
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", t):  # http:, https:, mailto:
                continue
            file_part, _, frag = t.partition("#")
            where = f"{os.path.relpath(path, src)}:{n}: {t}"
            target = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(target):
                bad.append(f"{where}: no such file")
                continue
            if frag and target.endswith(".md") and frag not in anchors(target):
                bad.append(f"{where}: no heading with the anchor #{frag} in {os.path.relpath(target, src)}")
for b in bad:
    print("  " + b, file=sys.stderr)
print(f"{len(files)} files checked", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
# --- the design document covers the tree -------------------------------------------------

"$HASTNBD_PYTHON" - "$HASTNBD_SRC" <<'EOF' || die "docs/design.md does not cover the source tree (above)"
import glob, os, re, sys
src = sys.argv[1]
with open(os.path.join(src, "docs", "design.md"), encoding="utf-8") as f:
    design = f.read()
def section(title):
    m = re.search(r"^## " + re.escape(title) + r"\n(.*?)(?=^## |\Z)", design, re.S | re.M)
    return m.group(1) if m else ""
owns, layout = section("What each file owns"), section("Layout")
missing = []
layers = sorted(d for d in os.listdir(os.path.join(src, "src")) if os.path.isdir(os.path.join(src, "src", d)))
for layer in layers:
    if f"| `{layer}` |" not in layout:
        missing.append(f"layer {layer}: no row in the Layout table")
names = set()
for path in glob.glob(os.path.join(src, "src", "*", "*.cpp")) + glob.glob(os.path.join(src, "include", "hastnbd", "*", "*.h")):
    layer = os.path.basename(os.path.dirname(path))
    names.add((f"{layer}/{os.path.splitext(os.path.basename(path))[0]}", os.path.relpath(path, src)))
for path in glob.glob(os.path.join(src, "src", "*.cpp")):
    names.add((os.path.basename(path), os.path.relpath(path, src)))
for name, path in sorted(names):
    stem = name.rsplit("/", 1)
    # A row names "layer/stem" (with or without .h/.cpp), or a file private
    # to a layer inside the row of its component ("`connection.cpp`").
    if not re.search(r"`" + re.escape(name) + r"(\.h|\.cpp)?`", owns) and not (
            len(stem) == 2 and re.search(r"`" + re.escape(stem[1]) + r"\.(cpp|h)`", owns)):
        missing.append(f"{path}: not in the table 'What each file owns'")
for m in missing:
    print("  " + m, file=sys.stderr)
print(f"{len(names)} files, {len(layers)} layers checked against docs/design.md", file=sys.stderr)
sys.exit(1 if missing else 0)
EOF

require_cmd dot
dot -Tsvg "$HASTNBD_SRC/docs/states.dot" -o "$T/states.svg" || die "dot cannot render docs/states.dot"
cmp -s "$T/states.svg" "$HASTNBD_SRC/docs/states.svg" \
  || die "docs/states.svg is not what docs/states.dot renders: run 'dot -Tsvg docs/states.dot -o docs/states.svg'"

log "t_docs: manual pages, --help, configuration keys, Markdown links and the design document agree"
