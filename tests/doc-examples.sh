#!/usr/bin/env bash
# Runs the documentation's offline examples, so they stay true: every fenced block in README.md
# and docs/*.md whose info string is "sh offline" (optionally "sh offline exit=N", default 0) is
# run with bash -e against the built binaries, in a scratch folder holding copies of examples/
# and certs/. A block that exits otherwise fails the test, named by its file and line.
#
#   tests/doc-examples.sh SOURCE_DIR BIN_DIR
set -uo pipefail

src=${1:?usage: doc-examples.sh SOURCE_DIR BIN_DIR}
bin=${2:?usage: doc-examples.sh SOURCE_DIR BIN_DIR}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

blocks=0
failed=0
cd "$src" || exit 2
for doc in README.md docs/*.md; do
  # One record per block: "<line of the fence> <expected exit>", the block's text in a file.
  while read -r line expected; do
    blocks=$((blocks + 1))
    work="$scratch/run-$blocks"
    mkdir -p "$work"
    cp -r "$src/examples" "$src/certs" "$work/"
    rm -rf "$work/certs/dev"
    awk -v start="$line" 'NR > start && /^```/ { exit } NR > start { print }' "$doc" \
      > "$work/example.sh"
    (cd "$work" && PATH="$bin:$PATH" bash -e -o pipefail example.sh) > "$work/output" 2>&1
    status=$?
    if [[ $status -ne $expected ]]; then
      failed=$((failed + 1))
      echo "$doc:$line: this example exited $status, the documentation expects $expected"
      sed 's/^/    | /' "$work/example.sh"
      echo "  its output (last 20 lines):"
      tail -n 20 "$work/output" | sed 's/^/    > /'
    fi
  done < <(awk '/^```sh offline/ {
                  expected = 0
                  if (match($0, /exit=[0-9]+/)) expected = substr($0, RSTART + 5, RLENGTH - 5)
                  print NR, expected }' "$doc")
done

if [[ $blocks -eq 0 ]]; then
  echo "no \`\`\`sh offline blocks found in README.md or docs/*.md: the markers are gone"
  exit 1
fi
echo "$((blocks - failed)) of $blocks documented offline examples ran as documented"
[[ $failed -eq 0 ]]
