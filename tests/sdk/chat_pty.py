"""Drive a terminal program through a real pseudo-terminal.

    python chat_pty.py PROGRAM [ARGS...] < steps.json

steps.json is a list of ["expect", TEXT] (wait up to 30 s until the program
has printed TEXT since the previous expect) and ["send", LINE] (type LINE and
Enter). Prints the whole transcript; exits 1, with the transcript so far, if
an expected text never comes or the program exits early.
"""

import json
import os
import pty
import select
import sys
import time


def main() -> int:
    steps = json.load(sys.stdin)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.argv[1], sys.argv[1:])
    transcript = ""
    unread = ""
    for kind, text in steps:
        if kind == "send":
            os.write(fd, text.encode() + b"\n")
            continue
        deadline = time.monotonic() + 30
        while text not in unread:
            left = deadline - time.monotonic()
            if left <= 0:
                print(transcript + unread)
                print(f"\n[chat_pty] never saw {text!r}", file=sys.stderr)
                return 1
            ready, _, _ = select.select([fd], [], [], min(left, 0.2))
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096).decode(errors="replace")
            except OSError:
                chunk = ""
            if not chunk:
                print(transcript + unread)
                print(f"\n[chat_pty] the program ended before {text!r}", file=sys.stderr)
                return 1
            unread += chunk
        cut = unread.index(text) + len(text)
        transcript += unread[:cut]
        unread = unread[cut:]
    # Let the program finish (the last step should make it exit).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            print(transcript + unread)
            return 0 if os.waitstatus_to_exitcode(status) == 0 else 1
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                unread += os.read(fd, 4096).decode(errors="replace")
            except OSError:
                pass
    print(transcript + unread)
    print("\n[chat_pty] the program did not exit", file=sys.stderr)
    os.kill(pid, 9)
    return 1


if __name__ == "__main__":
    sys.exit(main())
