#!/usr/bin/env bash
# Vendor the GraphiQL page's browser assets: the production builds of the packages that
# package-lock.json pins (`npm ci` checks every tarball against the lockfile's integrity hash) are
# copied into ../static/graphiql/vendor/, where the api binary embeds them (include_bytes!), and
# MANIFEST.json records each file's package, version, tarball integrity and SHA-256. The test
# `graphiql::tests::vendored_assets_match_the_lockfile` checks the committed files against it.
#
#   api/graphiql/vendor.sh           re-vendor (after changing a version in package.json:
#                                    `npm install --package-lock-only` here first)
#   api/graphiql/vendor.sh --check   download again and compare with the committed files
#
# Needs node and npm (and the npm registry); nothing else in the build does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/graphiql/vendor"
check=false
[ "${1:-}" = "--check" ] && check=true

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)

# served file name, package, path inside the package
files=(
  "react.production.min.js react umd/react.production.min.js"
  "react-dom.production.min.js react-dom umd/react-dom.production.min.js"
  "graphiql.min.js graphiql graphiql.min.js"
  "graphiql.min.css graphiql graphiql.min.css"
  "LICENSE.react react LICENSE"
  "LICENSE.react-dom react-dom LICENSE"
  "LICENSE.graphiql graphiql LICENSE"
)

dest="$out"
if $check; then dest="$work/out"; fi
mkdir -p "$dest"
for f in "${files[@]}"; do
  read -r name package path <<<"$f"
  cp "$work/node_modules/$package/$path" "$dest/$name"
done

# The manifest: what each file is and its hash, from the lockfile's view of its package.
(cd "$work" && node - "$dest" "${files[@]}" <<'JS'
const fs = require('fs');
const crypto = require('crypto');
const [dest, ...specs] = process.argv.slice(2);
const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8'));
const files = specs.map((spec) => {
  const [file, pkg, path] = spec.split(' ');
  const locked = lock.packages[`node_modules/${pkg}`];
  const bytes = fs.readFileSync(`${dest}/${file}`);
  return {
    file, package: pkg, version: locked.version, path, integrity: locked.integrity,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length,
  };
});
const manifest = {
  about: 'Written by api/graphiql/vendor.sh: files copied from the npm packages that api/graphiql/package-lock.json pins (tarballs checked against its integrity hashes by npm ci).',
  files,
};
fs.writeFileSync(`${dest}/MANIFEST.json`, JSON.stringify(manifest, null, 2) + '\n');
JS
)

if $check; then
  if diff -r "$out" "$dest"; then
    echo "vendored GraphiQL assets match the registry's packages"
  else
    echo "the committed assets differ from the registry's packages: run api/graphiql/vendor.sh" >&2
    exit 1
  fi
else
  echo "vendored into $out:"
  ls -l "$out"
fi
