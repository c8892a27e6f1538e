#!/bin/sh
# Regenerates the WBXML byte vectors from the decks in ../ with the
# independent oracles (Debian: kannel-extras, libwbxml2-utils). The tests in
# wap-adapter/tests/wbxml_vectors.rs read the committed files, so they run
# without the oracles installed.
#
#   NAME.kannel.wmlc          kannel's wml_tester -b (ISO-8859-1 for latin1)
#   NAME.libwbxml.wmlc        libwbxml's xml2wbxml (WBXML 1.3, string table)
#   NAME.libwbxml-nostr.wmlc  xml2wbxml -n (no string table)
#
# Two libwbxml outputs are malformed (libwbxml bugs) and kept under other
# names as decoder error cases: longtext.libwbxml-bad-table-length.wmlc and
# wml13.libwbxml-namespace-literal.wmlc (xml2wbxml -n fails on wml13.wml).
set -eu
cd "$(dirname "$0")/.."
for f in *.wml; do
    b=${f%.wml}
    charset=
    [ "$b" = latin1 ] && charset="-c ISO-8859-1"
    # shellcheck disable=SC2086
    /usr/lib/kannel/test/wml_tester -b $charset "$f" 2>/dev/null > "vectors/$b.kannel.wmlc"
    xml2wbxml -o "vectors/$b.libwbxml.wmlc" "$f" > /dev/null 2>&1
    xml2wbxml -n -o "vectors/$b.libwbxml-nostr.wmlc" "$f" > /dev/null 2>&1 ||
        rm -f "vectors/$b.libwbxml-nostr.wmlc"
done
mv vectors/longtext.libwbxml.wmlc vectors/longtext.libwbxml-bad-table-length.wmlc
mv vectors/wml13.libwbxml.wmlc vectors/wml13.libwbxml-namespace-literal.wmlc
