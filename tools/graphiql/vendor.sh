#!/usr/bin/env bash
# GraphiQL's browser builds, copied from the npm packages that package-lock.json pins into
# api/transport/static/graphiql/vendor/<package>/, each beside the package's LICENSE and package.json.
# The server serves them from there (/static/graphiql/vendor/...), so GraphiQL loads nothing from
# a CDN. `make graphiql-assets` runs this; docs/operations.md says how to upgrade GraphiQL.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../api/transport/static/graphiql/vendor"
modules="$here/node_modules"

(cd "$here" && npm ci --ignore-scripts --no-audit --no-fund)

# vendor PACKAGE FOLDER FILE...: FILEs of node_modules/PACKAGE into vendor/FOLDER, with its license.
vendor() {
    local package="$1" folder="$2"
    shift 2
    mkdir -p "$out/$folder"
    for file in "$@"; do
        cp "$modules/$package/$file" "$out/$folder/"
    done
    cp "$modules/$package/package.json" "$out/$folder/"
    if [ -e "$modules/$package/LICENSE" ]; then
        cp "$modules/$package/LICENSE" "$out/$folder/"
    fi
}

rm -rf "$out"
vendor react react umd/react.production.min.js
vendor react-dom react-dom umd/react-dom.production.min.js
vendor graphiql graphiql graphiql.min.js graphiql.min.css
vendor @graphiql/plugin-explorer plugin-explorer dist/index.umd.js dist/style.css

# @graphiql/plugin-explorer ships no LICENSE file. Its package.json says MIT and names the
# graphql/graphiql repository, whose LICENSE graphiql ships; its bundle also holds
# graphiql-explorer, whose LICENSE it ships.
{
    echo "@graphiql/plugin-explorer: MIT, the LICENSE of the graphql/graphiql repository"
    echo "(as the graphiql package ships it):"
    echo
    cat "$modules/graphiql/LICENSE"
    echo
    echo "graphiql-explorer, bundled in index.umd.js:"
    echo
    cat "$(dirname "$(cd "$modules/@graphiql/plugin-explorer" &&
        node -p 'require.resolve("graphiql-explorer/package.json")')")/LICENSE"
} > "$out/plugin-explorer/LICENSE"

echo "GraphiQL's assets are in $(cd "$out" && pwd):"
(cd "$out" && find . -type f | sort)
