#!/usr/bin/env python3
"""Judges the memcheck logs of a test/valgrind run and prints a summary.

Fails (exit 1) on
  * ANY memcheck error (invalid read/write, uninitialised value, bad free,
    ...) left after test/valgrind.supp in a process that had dfe_airbyte
    loaded, whatever its frames: an error inside libcurl, libc or
    PostgreSQL called from our code has no frame of ours near the top, and
    a corrupted heap shows up wherever it is next touched;
  * a definite leak whose allocation stack has a frame of ours.

"Had dfe_airbyte loaded" is read from valgrind's own log, not guessed from
the error text: with -v valgrind writes "Reading syms from .../dfe_airbyte.so"
when the library is mapped (shared_preload_libraries in the postmaster,
LOAD or CREATE EXTENSION in a backend), and every log names its parent
("Parent PID: N"); PostgreSQL forks its children without exec, so a child of
a process that had the library has it too.  Processes that never had it
(initdb's bootstrap, pg_ctl, a server of another extension version) are
counted, not judged.

A frame of ours is one in src/<file>.c of this tree (valgrind prints full
source paths, see test/valgrind) or in dfe_airbyte.so itself.

Usage: valgrind_report.py [--top DIR] LOGDIR
"""

import argparse
import glob
import os
import re
import sys

MAX_SHOWN = 10          # distinct errors printed in full
MAX_LINES = 40          # lines printed per error


class ProcLog:
    def __init__(self, path):
        self.path = path
        self.pid = None
        self.parent = None
        self.command = ""
        self.maps_library = False
        self.blocks = []        # error texts (between the markers)
        self.summary = None     # errors counted by valgrind's ERROR SUMMARY
        self.done = False       # past the first ERROR SUMMARY
        self.parse()

    def parse(self):
        block = None
        with open(self.path, errors="replace") as f:
            for line in f:
                m = re.match(r"==(\d+)== (.*)", line.rstrip("\n"))
                if self.pid is None and m:
                    self.pid = int(m.group(1))
                text = m.group(2) if m else line.rstrip("\n")
                # the markers are lines of their own ("==PID== MARKER");
                # -v also echoes them inside the command line options
                marker = text.strip() if m else None
                if block is not None:
                    if marker == "VALGRINDERROR-END":
                        self.blocks.append("\n".join(block))
                        block = None
                    else:
                        block.append(text)
                    continue
                if marker == "VALGRINDERROR-BEGIN" and not self.done:
                    block = []
                elif text.startswith("Parent PID: "):
                    self.parent = int(text.split()[2])
                elif text.startswith("Command: "):
                    self.command = text[len("Command: "):]
                elif "Reading syms from" in line and \
                        line.rstrip().endswith("/dfe_airbyte.so"):
                    self.maps_library = True
                elif text.startswith("ERROR SUMMARY: "):
                    # with -v the contexts are listed again after the
                    # first summary: count each error once
                    if self.summary is None:
                        self.summary = int(text.split()[2])
                        self.done = True
        if block is not None:       # the process died inside an error report
            self.blocks.append("\n".join(block))


OUR_FRAME = None      # set in main() from the names of src/*.c


def our_frame_pattern(top):
    """A frame in one of our sources, src/<file>.c or .h (shown relative to
    <top>/ or as a full path ending in /src/<file>), or in dfe_airbyte.so.
    PostgreSQL's and the libraries' sources never sit directly in a src/."""
    names = sorted(os.path.splitext(os.path.basename(f))[0]
                   for f in glob.glob(os.path.join(top, "src", "*.[ch]")))
    return re.compile(r"\((?:[^()]*/)?src/(?:%s)\.[ch]:\d+\)"
                      r"|\(in [^)]*/dfe_airbyte\.so\)"
                      % "|".join(re.escape(n) for n in names or ["-"]))


def has_our_frame(text):
    return OUR_FRAME.search(text) is not None


def is_leak(text):
    return "are definitely lost" in text or "are possibly lost" in text


def signature(text):
    """An error's kind and its code frames (addresses dropped): the same
    error in many processes is shown once."""
    lines = [re.sub(r"0x[0-9A-Fa-f]+", "", ln).strip()
             for ln in text.splitlines()]
    first = re.sub(r"\d+ bytes?", "N bytes", lines[0]) if lines else ""
    first = re.sub(r"in loss record \d+ of \d+", "", first)
    first = re.sub(r"\(\d+ direct, \d+ indirect\) ", "", first)
    return (first,) + tuple(ln for ln in lines[1:]
                            if ln.startswith(("at ", "by ")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", default=".")
    ap.add_argument("logdir")
    opts = ap.parse_args()
    global OUR_FRAME
    OUR_FRAME = our_frame_pattern(opts.top)

    procs = {}
    for path in sorted(glob.glob(os.path.join(opts.logdir, "*.log"))):
        p = ProcLog(path)
        procs.setdefault(p.pid, []).append(p)
    by_pid = {pid: logs[-1] for pid, logs in procs.items()}

    def loaded(p, seen=()):
        if p.maps_library:
            return True
        parent = by_pid.get(p.parent)
        if parent is None or parent.pid in seen:
            return False
        return loaded(parent, seen + (p.pid,))

    all_logs = [p for logs in procs.values() for p in logs]
    judged = [p for p in all_logs if loaded(p)]
    failing = {}            # signature -> [text, count, first log]
    not_judged = 0
    leaks_elsewhere = 0
    unfinished = 0
    for p in all_logs:
        is_loaded = loaded(p)
        if is_loaded and p.summary is None:
            unfinished += 1
        for text in p.blocks:
            if not is_loaded:
                not_judged += 1
                continue
            if is_leak(text):
                if not ("are definitely lost" in text and has_our_frame(text)):
                    leaks_elsewhere += 1
                    continue
            entry = failing.setdefault(signature(text), [text, 0, p.path])
            entry[1] += 1

    return print_summary(opts.logdir, all_logs, judged, failing, not_judged,
                         leaks_elsewhere, unfinished)


def print_summary(logdir, all_logs, judged, failing, not_judged,
                  leaks_elsewhere, unfinished):
    """Print what was judged and each failing report once; the exit code."""
    print("valgrind: %d process logs, %d with dfe_airbyte loaded"
          % (len(all_logs), len(judged)))
    if not_judged:
        print("valgrind: %d reports in processes without dfe_airbyte "
              "(not judged)" % not_judged)
    if leaks_elsewhere:
        print("valgrind: %d leak reports without a frame of ours (not "
              "judged)" % leaks_elsewhere)
    if unfinished:
        print("valgrind: %d processes with dfe_airbyte ended without an "
              "ERROR SUMMARY (killed; their logs may be incomplete)"
              % unfinished)
    if not all_logs:
        print("valgrind: FAILED: no logs in %s (did the server run under "
              "valgrind?)" % logdir)
        return 1
    if not failing:
        print("valgrind: PASSED: no memory errors and no definite leaks of "
              "ours in processes with dfe_airbyte loaded")
        return 0
    total = sum(e[1] for e in failing.values())
    print("valgrind: FAILED: %d memory errors/leaks (%d distinct) in "
          "processes with dfe_airbyte loaded; logs in %s"
          % (total, len(failing), logdir))
    ranked = sorted(failing.values(),
                    key=lambda e: (not has_our_frame(e[0]), -e[1]))
    for text, count, path in ranked[:MAX_SHOWN]:
        lines = text.splitlines()
        print("\n--- %d x, first in %s%s" % (
            count, os.path.basename(path),
            "" if has_our_frame(text) else " (no frame of ours)"))
        for ln in lines[:MAX_LINES]:
            print("    " + ln)
        if len(lines) > MAX_LINES:
            print("    ... (%d more lines)" % (len(lines) - MAX_LINES))
    if len(ranked) > MAX_SHOWN:
        print("\n... and %d more distinct reports (see the logs)"
              % (len(ranked) - MAX_SHOWN))
    return 1


if __name__ == "__main__":
    sys.exit(main())
