"""Run the tutorials at full size, as the check before a change to the library lands.

``make tutorials`` runs this. Each tutorial runs as a plain script (``CI`` unset, so at full size,
where its assertions check every number and figure its text states), in a folder of its own
under ``tutorial-runs/`` with its output in ``log.txt``, several at once where the cores allow
(one torch thread each). A line as each starts, with its last measured time, and one as it ends::

    [1/9] 01_autoencoder_to_vae: started (last time 1 min 16 s)
    [1/9] 01_autoencoder_to_vae: passed in 1 min 20 s

A failure prints the end of its log and makes the exit status 1. The times of passing runs are
kept in ``tutorials/times.json`` for the next start lines; tutorials/README.md quotes them.

Usage::

    python docs/run_tutorials.py                 # all nine, two at a time on two cores
    python docs/run_tutorials.py 01 05 --jobs 1  # some of them, one at a time
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import time

from pyro_vae.progress import duration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "[0-9][0-9]_*.py")))
TIMES = os.path.join(ROOT, "tutorials", "times.json")


def _times():
    try:
        with open(TIMES) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _start(script, out, threads):
    name = os.path.splitext(os.path.basename(script))[0]
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = open(os.path.join(folder, "log.txt"), "w")
    child = subprocess.Popen(
        [sys.executable, script], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    return name, child, log, time.perf_counter()


def _tail(path, lines=15):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="*", help="tutorial numbers (01 ... 09); default: all")
    parser.add_argument(
        "--jobs", type=int, default=max(1, os.cpu_count() or 1), help="tutorials at once"
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "tutorial-runs"), help="run folders")
    args = parser.parse_args(argv)
    scripts = [s for s in TUTORIALS if not args.only or os.path.basename(s)[:2] in args.only]
    if not scripts:
        parser.error(f"no tutorial numbered {', '.join(args.only)}")
    times, failed, running = _times(), [], []
    total, queue = len(scripts), list(enumerate(scripts, 1))
    threads = 1 if args.jobs > 1 else None  # two torch processes with two threads: 10x slower

    def say(i, name, what):
        print(f"[{i}/{total}] {name}: {what}", flush=True)

    try:
        while queue or running:
            while queue and len(running) < args.jobs:
                i, script = queue.pop(0)
                name, child, log, start = _start(script, args.out, threads)
                last = f"last time {duration(times[name])}" if name in times else "not timed yet"
                say(i, name, f"started ({last})")
                running.append((i, name, child, log, start))
            time.sleep(1)
            for job in [j for j in running if j[2].poll() is not None]:
                running.remove(job)
                i, name, child, log, start = job
                log.close()
                seconds = time.perf_counter() - start
                if child.returncode == 0:
                    say(i, name, f"passed in {duration(seconds)}")
                    times[name] = round(seconds)
                else:
                    failed.append(name)
                    say(i, name, f"FAILED (exit {child.returncode}) after {duration(seconds)}")
                    print(_tail(os.path.join(args.out, name, "log.txt")), end="", flush=True)
    except KeyboardInterrupt:
        for _, _, child, _, _ in running:
            child.kill()
        print("interrupted; the tutorials that finished are kept in", args.out, file=sys.stderr)
        return 130
    finally:
        with open(TIMES, "w") as f:
            json.dump(dict(sorted(times.items())), f, indent=1)
            f.write("\n")
    print(f"{total - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
