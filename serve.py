#!/usr/bin/env python3
"""The demo's static server (./build.sh serve, and the browser tests): this folder on localhost,
every response with the Cross-Origin-Opener-Policy and Cross-Origin-Embedder-Policy headers that
make the page cross-origin isolated, the condition browsers set for the shared memory of the
threaded WebAssembly module. --no-isolation leaves them out (the page then runs on one thread).

Usage: serve.py PORT [--directory DIR] [--no-isolation]
"""

import argparse
import functools
import http.server


class Handler(http.server.SimpleHTTPRequestHandler):
    isolated = True

    def end_headers(self):
        if self.isolated:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--directory", default=".")
    parser.add_argument("--no-isolation", action="store_true")
    args = parser.parse_args()
    Handler.isolated = not args.no_isolation
    handler = functools.partial(Handler, directory=args.directory)
    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
