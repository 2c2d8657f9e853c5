"""The adversarial corpus: submissions that try to fool, crash or escape the grader.

Every file in tests/adversarial/ (except the toy spec) is graded in the sandbox against
three toy exercises (attn_scores, embed_logits, double). The table below gives, for
each file and exercise, either True (must pass: the honest parts of a hostile file are
still graded) or a phrase the failure's feedback must contain. No hostile file may
earn a point it did not compute honestly, and the grader must survive all of them.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

# keep the grader's case cache out of the home folder (shared by the grader's test modules)
os.environ.setdefault("MECHINTERP_EDU_GRADER_CACHE",
                      os.path.join(tempfile.gettempdir(), "mechinterp-edu-tests-grader-cache"))

import pytest

ADVERSARIAL = Path(__file__).resolve().parent / "adversarial"
sys.path.insert(0, str(ADVERSARIAL))
import grader_toy_spec as spec  # noqa: E402

from mechinterp_edu.grader.grade import grade_file, grade_source  # noqa: E402
from mechinterp_edu.grader import jail, sandbox, server  # noqa: E402
from mechinterp_edu.grader.sandbox import Limits  # noqa: E402

LIMITS = Limits(memory_mb=600, load_timeout_s=20)
OK = True
ALL_OK = {"attn_scores": OK, "embed_logits": OK, "double": OK}


def attn_fails(phrase):
    return {"attn_scores": phrase, "embed_logits": OK, "double": OK}


def double_fails(phrase):
    return {"attn_scores": OK, "embed_logits": OK, "double": phrase}


def all_fail(phrase):
    return {"attn_scores": phrase, "embed_logits": phrase, "double": phrase}


ABSENT = "No such file or directory"       # the course is not in the jail at all
SCALED = "times a constant factor"          # the trick did nothing; the decoy answer is graded

VERDICTS = {
    # honest controls
    "honest_correct.py": ALL_OK,
    "honest_alternative.py": ALL_OK,
    "mutates_inputs.py": ALL_OK,                      # right answers; inputs changed afterwards
    "valid_notebook.ipynb": ALL_OK,
    "sandbox_probe.py": ALL_OK,                       # passes only inside a locked-down process
    # objects that lie about equality
    "eq_always_true.py": attn_fails("returned submission.AlwaysEqual"),
    "tensor_subclass.py": attn_fails("a subclass of torch.Tensor"),
    # monkeypatching torch / numpy / the grader
    "patch_allclose.py": attn_fails("all zeros"),
    "patch_numpy_savez.py": all_fail("could not read what your file did"),
    "patch_grader.py": all_fail("importing 'mechinterp_edu.grader.compare' is not allowed"),
    # getting the answer from the course instead of computing it
    "import_reference.py": attn_fails("importing 'mechinterp_edu' is not allowed"),
    "import_solutions.py": attn_fails("importing 'solutions' is not allowed"),
    "exec_test_spec.py": attn_fails(ABSENT),
    "dir_fd_escape.py": attn_fails(ABSENT),
    "fspath_swap.py": attn_fails(ABSENT),
    "native_file_read.py": {"attn_scores": ABSENT,                     # C++ reads: not in the jail
                            "embed_logits": "no device could be read", "double": OK},
    "chdir_symlink.py": attn_fails(ABSENT),
    "read_parent_memory.py": attn_fails("Permission denied"),    # the server is not dumpable
    "gc_hunt.py": attn_fails("all zeros"),
    # processes, shells, native code, signals
    "subprocess_cat.py": attn_fails("returned non-zero exit status"),   # cat finds nothing
    "os_system.py": attn_fails(SCALED),
    "posixsubprocess_fork.py": attn_fails(SCALED),
    "ctypes_libc.py": attn_fails(SCALED),
    "fork_bomb.py": attn_fails(("Resource temporarily unavailable", "timed out")),   # capped, or killed
    "kill_parent.py": attn_fails(("the grading process stopped", SCALED)),    # a race: either way boxed
    "stop_server.py": attn_fails(SCALED),                   # the frozen server is replaced afterwards
    "write_outside.py": attn_fails(SCALED),                # wrote only into the jail tmpfs
    # exits, crashes, hangs, memory
    "sys_exit_import.py": all_fail("called sys.exit()"),
    "sys_exit_call.py": attn_fails("called sys.exit()"),
    "os_exit_call.py": attn_fails("ended the grading process"),
    "infinite_loop.py": double_fails("timed out after 3 s"),
    "sleep_past_timeout.py": double_fails("timed out after 3 s"),
    "hostile_exception.py": double_fails("timed out after 3 s"),
    "memory_bomb.py": attn_fails("ran out of memory"),
    # faking a pass
    "print_passed.py": attn_fails("all zeros"),
    "truncate_cases.py": all_fail("expected results for"),   # patched the case loop
    "rewrite_job.py": {"attn_scores": "ended the grading process",      # the job is a sealed memfd
                       "embed_logits": ABSENT, "double": OK},
    # 1. lying about the structure of what came back
    "lie_case_count.py": attn_fails("expected results for 4 cases"),
    "lie_shape.py": attn_fails("does not match its description"),
    "lie_dtype.py": attn_fails("does not match its description"),
    "lie_missing_array.py": attn_fails("missing array"),
    "lie_tuple_len.py": attn_fails("tuple description is malformed"),
    "lie_not_implemented.py": attn_fails("skipped without a reason"),
    # 2. endless progress, noise on the event pipe
    "endless_progress.py": attn_fails("broke the protocol"),
    "slow_drip.py": double_fails("timed out after 3 s"),
    "fake_done_frame.py": attn_fails("broke the protocol"),
    # 3. results that inflate, oversize, or get widened
    "inflate_zip.py": attn_fails("is compressed"),
    "inflate_header.py": attn_fails("claims more data than it holds"),
    "oversize_frame.py": attn_fails("more than the"),
    "huge_result.py": attn_fails("an extra axis 0 of size 400"),
    "int8_result.py": attn_fails("expected a floating-point tensor (float64), got int8"),
    # 4. malformed results
    "bad_zip.py": attn_fails("not a valid npz file"),
    "zip_directory_bomb.py": attn_fails("a directory of 10000 members"),
    "deep_json.py": attn_fails("not valid JSON (RecursionError)"),
    "object_array.py": attn_fails("plain numbers only"),
    # 6. network
    "socket_connect.py": attn_fails(SCALED),
    # 7. threads and disk
    "thread_bomb.py": attn_fails("can't start new thread"),
    "disk_fill.py": attn_fails("File too large"),
    "disk_many_files.py": attn_fails("No space left on device"),
    # 8. native code reading files
    "torch_from_file.py": attn_fails(ABSENT),
    # 9. terminal control characters in feedback
    "control_chars.py": attn_fails("\\x1b[2J\\x1b[H\\x1b[32m all passed 18/18"),
    # 10. dtype
    "float32_for_float64.py": attn_fails("dtype: expected float64 (the dtype of the inputs), got float32"),
    "double_for_float32.py": double_fails("dtype: expected float32 (the dtype of the inputs), got float64"),
    # broken files
    "syntax_error.py": all_fail("syntax error in syntax_error.py at line 5"),
    "raise_in_import.py": all_fail("raised RuntimeError while loading"),
    "invalid_notebook.ipynb": all_fail("not valid JSON"),
    "not_a_notebook.ipynb": all_fail("not a Jupyter notebook"),
    "deep_notebook.ipynb": all_fail("nested far too deeply"),                # 4. a RecursionError in a naive reader
    "tagged_notebook.ipynb": {"attn_scores": OK, "embed_logits": "missing function `embed_logits`",
                              "double": OK},
    # wrong answers of the wrong kind
    "wrong_shape.py": attn_fails("axis 0 (head) of size 2 (n_heads = 2) is missing"),
    "nan_output.py": double_fails("contains NaN"),
    "returns_list.py": double_fails("returned a Python list"),
    "returns_numpy.py": double_fails("returned a numpy.ndarray"),
    "returns_none.py": double_fails("returned None"),
}


def corpus_files() -> list[str]:
    return sorted(p.name for p in ADVERSARIAL.iterdir()
                  if p.suffix in (".py", ".ipynb") and p.name != "grader_toy_spec.py")


def test_corpus_is_complete_and_large_enough():
    files = corpus_files()
    assert sorted(VERDICTS) == files, "every corpus file needs an expected verdict (and vice versa)"
    hostile = [f for f, v in VERDICTS.items() if v != ALL_OK]
    assert len(files) >= 45 and len(hostile) >= 40
    for name, verdict in VERDICTS.items():       # each still grades the rest of its file
        if name.endswith(".py") and verdict != ALL_OK and name not in ALL_FAIL_BY_DESIGN:
            assert OK in verdict.values(), name


ALL_FAIL_BY_DESIGN = {"sys_exit_import.py", "raise_in_import.py", "syntax_error.py",
                      "patch_grader.py", "patch_numpy_savez.py", "truncate_cases.py"}


ISOLATED, WHY_NOT = jail.isolation()
needs_bwrap = pytest.mark.skipif(not ISOLATED, reason=f"bubblewrap cannot isolate code here: {WHY_NOT}")
PEAK_LIMIT_KB = 2**20          # the parent's peak resident memory must stay under 1 GB


PEAK_PROBE = ("def peak_kb():\n"
              "    # VmHWM: this process's own peak RSS. Not ru_maxrss, which Linux carries across\n"
              "    # exec from the process that started us (a test worker's 1 GB would show up here).\n"
              "    for line in open('/proc/self/status'):\n"
              "        if line.startswith('VmHWM:'):\n"
              "            return int(line.split()[1])\n")


def test_peak_probe_sees_a_fresh_process_growth_and_not_its_starter(tmp_path):
    """The probe the memory test uses: a process started from this (large) worker reports its own
    small peak, then a 300 MB allocation; ru_maxrss would report the worker's peak from the start."""
    import subprocess

    script = tmp_path / "probe.py"
    script.write_text("import resource\n" + PEAK_PROBE +
                      "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak_kb())\n"
                      "block = bytearray(300 * 2**20)\n"
                      "for i in range(0, len(block), 4096): block[i] = 1\n"
                      "print(peak_kb())\n")
    ballast = bytearray(400 * 2**20)                  # this worker is now over 400 MB at least
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    maxrss, before, after = map(int, subprocess.run([sys.executable, str(script)], capture_output=True,
                                                    text=True, timeout=60, check=True).stdout.split())
    del ballast
    assert maxrss > 400 * 1024, "ru_maxrss no longer carries the starter's peak: the probe could use it"
    assert before < 100 * 1024, f"a bare Python process reported a peak of {before // 1024} MB"
    assert after - before > 290 * 1024


SLOW_VERDICTS = {"fork_bomb.py"}          # runs to its exercise's full timeout
CORPUS_GROUP = pytest.mark.xdist_group("corpus")   # one worker grades the corpus once (below)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> dict:
    """Every corpus file but the slow ones, graded in turn by ONE fresh grading process (as
    `python -m mechinterp_edu grade` is): {name: (report dict, the process's peak RSS in kB just
    after that file)}. The verdict tests and the memory test read it, so each file is graded once."""
    import json
    import subprocess

    names = [n for n in sorted(VERDICTS) if n not in SLOW_VERDICTS]
    script = tmp_path_factory.mktemp("corpus") / "grade_corpus.py"
    script.write_text(
        "import json, sys\n" + PEAK_PROBE +
        f"sys.path.insert(0, {str(ADVERSARIAL)!r})\n"
        "import grader_toy_spec as spec\n"
        "from mechinterp_edu.grader.grade import grade_file\n"
        "from mechinterp_edu.grader.sandbox import Limits\n"
        f"limits = Limits(memory_mb={LIMITS.memory_mb}, load_timeout_s={LIMITS.load_timeout_s})\n"
        "for name in json.loads(sys.argv[1]):\n"
        f"    report = grade_file({str(ADVERSARIAL)!r} + '/' + name, exercises=spec.CORE, limits=limits)\n"
        "    print(json.dumps([name, report.to_dict(), peak_kb()]), flush=True)\n")
    try:
        done = subprocess.run([sys.executable, str(script), json.dumps(names)], capture_output=True,
                              text=True, timeout=900)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:       # what was graded still counts; the rest fail
        as_text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        stdout, stderr, code = as_text(exc.stdout), as_text(exc.stderr) + "\n(timed out after 900 s)", "timeout"
    graded = {}
    for line in stdout.splitlines():
        if line.startswith("["):
            name, report, kb = json.loads(line)
            graded[name] = (report, kb)
    return {"graded": graded, "returncode": code, "stderr": stderr[-2000:]}


def check_verdict(name: str, report: dict) -> None:
    results = report["results"]
    assert [r["exercise"] for r in results] == ["attn_scores", "embed_logits", "double"]
    expected = VERDICTS[name]
    for result in results:
        want, feedback = expected[result["exercise"]], result["feedback"]
        if want is OK:
            assert result["passed"], f"{name}: {result['exercise']} should pass: {feedback}"
            assert result["score"] == result["max_score"]
        else:
            assert not result["passed"], f"{name}: {result['exercise']} must not pass"
            assert result["score"] == 0
            wants = want if isinstance(want, tuple) else (want,)
            assert any(w in feedback for w in wants), f"{name}: {result['exercise']}: {feedback!r}"
    assert report["score"] == sum(r["max_score"] for r in results if expected[r["exercise"]] is OK)


@needs_bwrap
@CORPUS_GROUP
def test_parent_peak_memory_stays_under_1_gb_on_every_corpus_file(corpus_run):
    """The grading parent's own peak resident memory (VmHWM), read after each corpus file, stays
    under 1 GB, and the process grades the whole corpus without dying."""
    assert corpus_run["returncode"] == 0, corpus_run["stderr"]
    peaks = {name: kb for name, (_, kb) in corpus_run["graded"].items()}
    assert sorted(peaks) == [n for n in sorted(VERDICTS) if n not in SLOW_VERDICTS]
    for name, kb in peaks.items():
        assert kb < PEAK_LIMIT_KB, f"{name}: the grading parent's peak memory reached {kb // 1024} MB"
    print("grading parent's peak memory over the corpus:", max(peaks.values()) // 1024, "MB")


@needs_bwrap
@CORPUS_GROUP
@pytest.mark.parametrize("name", sorted(set(VERDICTS) - SLOW_VERDICTS))
def test_adversarial_verdict(name, corpus_run):
    assert name in corpus_run["graded"], (f"the grading process stopped before {name} "
                                          f"(exit {corpus_run['returncode']}): {corpus_run['stderr']}")
    check_verdict(name, corpus_run["graded"][name][0])


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_VERDICTS))
def test_slow_adversarial_verdict(name):
    check_verdict(name, grade_file(ADVERSARIAL / name, exercises=spec.CORE, limits=LIMITS).to_dict())


# protocol-level attacks that need no jail to be contained: the fallback grades them the same
FALLBACK_SAMPLE = ["honest_correct.py", "lie_case_count.py", "lie_shape.py", "endless_progress.py",
                   "inflate_zip.py", "deep_json.py", "oversize_frame.py", "os_exit_call.py",
                   "sleep_past_timeout.py", "control_chars.py", "float32_for_float64.py"]


@pytest.fixture
def without_bwrap(monkeypatch):
    monkeypatch.setenv("MECHINTERP_GRADER_NO_BWRAP", "1")
    sandbox.stop_server()
    jail.isolation.cache_clear()
    monkeypatch.setattr(server, "_NOTICE_SHOWN", [False])
    yield
    sandbox.stop_server()
    monkeypatch.delenv("MECHINTERP_GRADER_NO_BWRAP")
    jail.isolation.cache_clear()


def test_fallback_grades_in_a_plain_child_and_says_so_once(without_bwrap, capfd):
    assert jail.isolation() == (False, "MECHINTERP_GRADER_NO_BWRAP is set")
    for name in FALLBACK_SAMPLE:
        report = grade_file(ADVERSARIAL / name, exercises=spec.CORE, limits=LIMITS)
        for result in report.results:
            want = VERDICTS[name][result.exercise]
            assert result.passed is (want is OK), (name, result.exercise, result.feedback)
            if want is not OK:
                assert want in result.feedback, (name, result.feedback)
    notices = [line for line in capfd.readouterr().err.splitlines() if "NOT isolated" in line]
    assert len(notices) == 1 and "MECHINTERP_GRADER_NO_BWRAP" in notices[0]


@needs_bwrap
def test_the_jail_has_no_network_and_its_own_processes():
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    source = f'''
import os, socket, torch

def double(x):
    try:
        socket.create_connection(("127.0.0.1", {port}), timeout=1).close()
        return x * 3                                  # reached the grader's machine: wrong answer
    except OSError:
        pass
    visible = [p for p in os.listdir("/proc") if p.isdigit()]
    assert len(visible) < 10, f"not its own pid namespace: {{len(visible)}} processes visible"
    return x * 2
'''
    try:
        report = grade_source(source, exercises=[spec.DOUBLE], limits=LIMITS)
    finally:
        listener.close()
    assert report.results[0].passed, report.results[0].feedback


@needs_bwrap
def test_threads_and_processes_are_capped():
    """RLIMIT_NPROC (or, for root, whom the kernel exempts, a pids cgroup) caps what one jail runs."""
    source = '''
import threading, time

def double(x):
    started = 0
    try:
        for _ in range(2000):
            threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
            started += 1
    except RuntimeError:
        pass
    return x * 2 if started < 1000 else x * 3
'''
    report = grade_source(source, exercises=[spec.DOUBLE], limits=LIMITS)
    assert report.results[0].passed, report.results[0].feedback


def _cgroup_tree(tmp_path, own, controllers=None, v1=False):
    root = tmp_path / "cgroup"
    (root / own.lstrip("/")).mkdir(parents=True)
    if controllers is not None:
        (root / own.lstrip("/") / "cgroup.controllers").write_text(controllers + "\n")
        (root / own.lstrip("/") / "cgroup.subtree_control").write_text("\n")
    if v1:
        (root / "pids").mkdir()
        (root / "pids" / "cgroup.procs").write_text("")
    (tmp_path / "self").write_text(f"0::{own}\n")
    return str(root), str(tmp_path / "self")


def test_the_pids_cgroup_is_found_on_v1_and_on_a_delegated_v2(tmp_path):
    """On a model of the cgroup files (these machines run v1, so v2 is not met for real here)."""
    root, me = _cgroup_tree(tmp_path / "a", "/", v1=True)
    assert jail.pids_cgroup_base(root, me) == os.path.join(root, "pids")
    root, me = _cgroup_tree(tmp_path / "b", "/user.slice/grader.scope", controllers="cpu pids")
    base = os.path.join(root, "user.slice/grader.scope")
    assert jail.pids_cgroup_base(root, me) == base
    jail._enable_pids_for_children(base)              # what task_cgroup does before making a child
    assert Path(base, "cgroup.subtree_control").read_text() == "+pids"
    root, me = _cgroup_tree(tmp_path / "c", "/docker/abc", controllers="cpu memory")     # no pids
    assert jail.pids_cgroup_base(root, me) is None
    root, me = _cgroup_tree(tmp_path / "d", "/")                                        # no v2 files
    assert jail.pids_cgroup_base(root, me) is None


@pytest.mark.skipif(os.geteuid() != 0 or jail.pids_cgroup_base() is None,
                    reason="only root gets a pids cgroup, where the machine has one to give")
def test_a_task_cgroup_is_made_capped_and_removed():
    base = jail.pids_cgroup_base()
    if not os.access(base, os.W_OK):
        pytest.skip(f"{base} is not writable here (a read-only cgroup mount)")
    path = jail.task_cgroup()
    assert path is not None and Path(path).parent == Path(base)
    assert Path(path, "pids.max").read_text().strip() == str(jail.MAX_TASKS)
    jail.remove_cgroup(path)
    assert not Path(path).exists()


@needs_bwrap
def test_a_frozen_server_does_not_cost_the_next_file():
    import time

    grade_file(ADVERSARIAL / "stop_server.py", exercises=spec.CORE, limits=LIMITS)
    start = time.monotonic()
    report = grade_file(ADVERSARIAL / "honest_correct.py", exercises=spec.CORE, limits=LIMITS)
    assert report.score == report.max_score, [r.feedback for r in report.results]
    assert time.monotonic() - start < 60


def test_hostile_files_left_no_trace():
    """Grade every hostile file that tries to write outside the sandbox, then look: the test does
    not depend on another test having graded them first (test order, -n 2)."""
    marker = Path("/tmp/mechinterp_adversarial_marker.txt")
    marker.unlink(missing_ok=True)
    writers = [name for name in sorted(VERDICTS) if str(marker) in (ADVERSARIAL / name).read_text(encoding="utf-8")]
    assert writers, "no adversarial file tries to write the marker any more"
    for name in writers:
        grade_file(ADVERSARIAL / name, exercises=spec.CORE, limits=LIMITS)
    assert not marker.exists()


def test_os_exit_restarts_a_child_for_the_remaining_exercises():
    source = '''
import os
import torch

def double(x):
    return 2 * x

def attn_scores(q, k):
    os._exit(7)

def embed_logits(X, W_E, W_pos, W_U):
    return (X @ W_E + W_pos[: X.shape[-2]]) @ W_U
'''
    report = grade_source(source, exercises=[spec.DOUBLE, spec.ATTN, spec.EMBED], limits=LIMITS)
    double, attn, embed = report.results
    assert double.passed and embed.passed
    assert not attn.passed and "exit code 7" in attn.feedback


def test_timeout_kills_promptly_and_grades_the_rest():
    source = '''
import torch

def double(x):
    import time
    time.sleep(1000)

def embed_logits(X, W_E, W_pos, W_U):
    return (X @ W_E + W_pos[: X.shape[-2]]) @ W_U
'''
    start = time.monotonic()
    report = grade_source(source, exercises=[spec.DOUBLE, spec.EMBED], limits=LIMITS)
    elapsed = time.monotonic() - start
    double, embed = report.results
    assert "timed out after 3 s" in double.feedback and embed.passed
    assert elapsed < 30


def test_module_level_infinite_loop_is_a_verdict():
    source = "import torch\nwhile True:\n    pass\n"
    limits = Limits(memory_mb=600, load_timeout_s=2)
    report = grade_source(source, exercises=[spec.DOUBLE, spec.EMBED], limits=limits)
    for result in report.results:
        assert not result.passed
        assert "still running its top-level code after 2 s" in result.feedback


def test_sandbox_and_in_process_agree_on_an_honest_file():
    source = (ADVERSARIAL / "honest_alternative.py").read_text()
    boxed = grade_source(source, exercises=spec.CORE, limits=LIMITS)
    trusted = grade_source(source, exercises=spec.CORE, sandbox=False)
    assert boxed.to_dict()["results"] == trusted.to_dict()["results"]
    assert boxed.score == boxed.max_score


def test_grading_survives_a_dead_fork_server():
    from mechinterp_edu.grader import sandbox

    server = sandbox.get_server()
    server.wait_ready(120)
    os.killpg(server.proc.pid, 9)
    server.proc.wait(timeout=10)
    report = grade_file(ADVERSARIAL / "honest_correct.py", exercises=spec.CORE, limits=LIMITS)
    assert report.score == report.max_score


def test_honest_housekeeping_is_allowed():
    """Scratch files in the working folder, temp files, env vars, listing the cwd: all fine."""
    source = '''
import os
import tempfile
import torch

def double(x):
    os.listdir()
    os.environ["SCRATCH"] = "1"
    with tempfile.NamedTemporaryFile() as fh:
        fh.write(b"scratch")
    with open("notes.txt", "w") as fh:
        fh.write("ok")
    torch.save(x, "x.pt")
    return 2 * torch.load("x.pt")
'''
    (result,) = grade_source(source, exercises=[spec.DOUBLE], limits=LIMITS).results
    assert result.passed, result.feedback


@pytest.mark.slow
def test_transformer_lens_can_be_imported_by_learners():
    source = '''
import einops
import torch
import transformer_lens

def double(x):
    assert transformer_lens.__name__ == "transformer_lens"
    return einops.reduce(torch.stack([x, x]), "two ... -> ...", "sum")
'''
    (result,) = grade_source(source, exercises=[spec.DOUBLE], limits=LIMITS).results
    assert result.passed, result.feedback


def test_grading_from_short_lived_threads():
    """Each Streamlit run is a new thread. The sandbox server must outlive the thread that
    started it (PR_SET_PDEATHSIG would kill it when that thread exits)."""
    import threading

    source = "def double(x):\n    return 2 * x\n"
    scores = []

    def run():
        scores.append(grade_source(source, exercises=[spec.DOUBLE], limits=LIMITS).score)

    for _ in range(3):
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    assert scores == [1, 1, 1]


def _descendants(pid: int) -> list[int]:
    parents = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(line.split()[1] for line in status.read_text().splitlines()
                        if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        parents[int(status.parent.name)] = int(ppid)
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def test_sandbox_server_exits_when_the_grader_dies(tmp_path):
    """No orphans: kill a grading process and its sandbox server goes too (EOF on its socket)."""
    import signal
    import subprocess

    script = tmp_path / "grader.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ADVERSARIAL)!r})\n"
        "import grader_toy_spec as spec\n"
        "from mechinterp_edu.grader.grade import grade_source\n"
        "grade_source('def double(x):\\n    return 2 * x\\n', exercises=[spec.DOUBLE])\n"
        "print('graded', flush=True)\n"
        "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "graded"
        servers = _descendants(proc.pid)         # bwrap and the server in its jail, or the plain server

        assert servers, "the grading process started a sandbox server"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() and
                                         "zombie" not in Path(f"/proc/{p}/status").read_text()
                                         for p in servers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()
                   for p in servers)
