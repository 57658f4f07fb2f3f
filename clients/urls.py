"""How an id (a reference id, an inquiry or event id) becomes one path segment of a vendor URL.

Ids are other people's strings: the host application chooses reference ids, and any of `/ ? # %`, spaces,
unicode, `.` or `..` may be in one. Put raw into a URL they would change its route (`/`), start a query or
fragment (`?`, `#`), or be collapsed as dot segments (`/account/../enroll` is `/enroll` to every HTTP
client and server). So every id goes through `segment()`, and every client sends its URLs with
`SendsUrlsAsBuilt`, which stops requests from undoing the encoding. Pure: no I/O, no HTTP library import.
"""

from __future__ import annotations

from urllib.parse import quote

# What a URL we built may hold once encoded: printable ASCII without spaces. Anything else means the URL was
# not built by segment() (a base URL from configuration, say) and requests' own quoting is the safer choice.
_BUILT = frozenset(chr(code) for code in range(0x21, 0x7F))


def segment(value: str) -> str:
    """`value` as exactly one percent-encoded path segment, which a server decodes back to `value`.

    Everything but RFC 3986's unreserved characters is encoded, `/` included (quote's default keeps it).
    A segment made only of dots (`.`, `..`) is a dot segment, which clients and servers remove or resolve
    against its parent: its dots are encoded as `%2E`, which RFC 3986 treats as data. Other dots stay as
    they are: no one normalises `a.b`. An empty value cannot be a segment (`/account//enroll` is another
    route to many servers, and `//` is merged by some), nor can text that is not valid Unicode; both raise
    ValueError (UnicodeEncodeError is one).
    """
    if not isinstance(value, str) or not value:
        raise ValueError("an id used in a URL must be a non-empty string")
    encoded = quote(value, safe="", errors="strict")
    return "%2E" * len(encoded) if encoded.strip(".") == "" else encoded


def is_built(url: str) -> bool:
    """True for a URL that is already fully percent-encoded (what segment() and urlencode produce)."""
    return bool(url) and all(character in _BUILT for character in url)


class SendsUrlsAsBuilt:
    """Mixed into a `requests.Session` (before it): each request goes out with its URL exactly as built.

    requests "requotes" every URL: it decodes each percent-encoded unreserved character, and does so after
    urllib3 has removed dot segments, so `/account/%2E%2E/enroll` would go on the wire as
    `/account/../enroll`, which the server (or a proxy before it) then collapses to `/enroll`. A URL made
    of segment()s is already encoded, so it is sent as it is; any other URL, or one with `params`, is left
    to requests.
    """

    def prepare_request(self, request):
        prepared = super().prepare_request(request)
        if not request.params and isinstance(request.url, str) and is_built(request.url):
            prepared.url = request.url
        return prepared
