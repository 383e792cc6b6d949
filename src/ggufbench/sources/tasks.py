"""Task sets: multiple-choice questions for llama-perplexity's --multiple-choice mode, as sources.

A task set is a file in llama.cpp's multiple-choice binary format (tools/perplexity/perplexity.cpp, the same in
4227c9b and 0c1e570), all integers little-endian:
    u32 n_task, u32 offsets[n_task]          offsets: where each task starts, from the file's first byte
    per task:  string question                string: u32 length, then that many bytes (UTF-8)
               mc1: u32 n (<= 100), n strings, n int32 labels (1: a correct answer)
               mc2: the same (the mode scores mc1 only; may be empty: n = 0)
llama-perplexity joins question + " " + answer and picks the answer with the highest mean log-probability per
token; a question counts as right when that answer's label is 1.

Kinds (config `tasks.sets.<name>`, one key each; an unknown kind is refused naming the known ones):
  local: {path, sha256?}            a .bin in that format on disk
  hub:   {repo, file, revision?}    a file of a Hub dataset (ikawrakow/validation-datasets-for-llama.cpp holds
                                    arc-easy-validation.bin, arc-challenge-validation.bin, mmlu-validation.bin),
                                    pinned and checked through sources/hub.py and the hub lock
  cloze: {corpus, questions, ...}   made at run time from the run's own corpus (make_cloze): a few sentences of
                                    context, the sentence that follows them and distractors of similar length drawn
                                    from the same document, seeded

Every set is read back with bounded parsing (decode_tasks) before it is used: a malformed file is refused with
TaskFileError naming the file and the byte offset, not left to llama-perplexity (which stops at the first bad
task and exits 0 without a result).
"""

from __future__ import annotations

import hashlib
import random
import re
import struct
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import ConfigError, GgufbenchError
from ..core.io import atomic_path

MAX_ANSWERS = 100  # llama.cpp refuses a task with more answers (multiple_choice_answers::deserialize)
_U32 = struct.Struct("<I")


class TaskFileError(GgufbenchError):
    """A task file that is not in llama.cpp's multiple-choice format: names the file and the byte offset."""

    def __init__(self, path: str | Path, offset: int, what: str):
        super().__init__(f"{path}: not a multiple-choice task file at byte {offset}: {what}")
        self.path, self.offset = str(path), offset


@dataclass(frozen=True)
class Task:
    question: str
    answers: tuple[str, ...]
    labels: tuple[int, ...]               # 1 marks the correct answer(s)
    mc2_answers: tuple[str, ...] = ()
    mc2_labels: tuple[int, ...] = ()

    @property
    def gold(self) -> int:
        """Index of the first correct answer (-1 when none is marked)."""
        return self.labels.index(1) if 1 in self.labels else -1


# --- the binary format -----------------------------------------------------------------------------------

def _string(s: str) -> bytes:
    data = s.encode("utf-8")
    return _U32.pack(len(data)) + data


def _answers(answers: tuple[str, ...], labels: tuple[int, ...]) -> bytes:
    if len(answers) != len(labels) or len(answers) > MAX_ANSWERS:
        raise ValueError(f"{len(answers)} answers with {len(labels)} labels (at most {MAX_ANSWERS}, one label each)")
    return (_U32.pack(len(answers)) + b"".join(_string(a) for a in answers)
            + struct.pack(f"<{len(labels)}i", *labels))


def encode_tasks(tasks: list[Task]) -> bytes:
    bodies = [_string(t.question) + _answers(t.answers, t.labels) + _answers(t.mc2_answers, t.mc2_labels)
              for t in tasks]
    pos = 4 + 4 * len(tasks)
    offsets = []
    for b in bodies:
        offsets.append(pos)
        pos += len(b)
    return _U32.pack(len(tasks)) + struct.pack(f"<{len(tasks)}I", *offsets) + b"".join(bodies)


class _Reader:
    """Bounded reads over the file's bytes: every length is checked against what is left before it is used."""

    def __init__(self, data: bytes, name: str | Path):
        self.data, self.name, self.pos = data, name, 0

    def fail(self, what: str, at: int | None = None) -> TaskFileError:
        return TaskFileError(self.name, self.pos if at is None else at, what)

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail(f"{what} needs {n} bytes, {len(self.data) - self.pos} are left (the file is truncated)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def string(self, what: str) -> str:
        at = self.pos
        raw = self.take(self.u32(f"the length of {what}"), what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not UTF-8 ({e.reason} at its byte {e.start})", at) from None

    def answers(self, what: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        at = self.pos
        n = self.u32(f"the answer count of {what}")
        if n > MAX_ANSWERS:
            raise self.fail(f"{what} has {n} answers; llama.cpp reads at most {MAX_ANSWERS}", at)
        answers = tuple(self.string(f"answer {j} of {what}") for j in range(n))
        labels = struct.unpack(f"<{n}i", self.take(4 * n, f"the {n} labels of {what}"))
        return answers, labels


def decode_tasks(data: bytes, name: str | Path = "<bytes>") -> list[Task]:
    """The tasks of a multiple-choice file, every length bounded by the bytes left; each task checked as
    llama-perplexity needs it (a question, at least one non-empty answer, one marked correct), and the offsets
    table checked against where each task really starts. Raises TaskFileError (file, byte offset, what)."""
    r = _Reader(data, name)
    n_task = r.u32("the task count")
    if n_task == 0:
        raise r.fail("the task count is 0 (llama-perplexity: 'no tasks')", 0)
    if n_task > (len(data) - 4) // 4:
        raise r.fail(f"the task count {n_task:,} cannot fit in {len(data):,} bytes (is this a task file?)", 0)
    offsets = struct.unpack(f"<{n_task}I", r.take(4 * n_task, "the offsets table"))
    tasks = []
    for i, offset in enumerate(offsets):
        if offset != r.pos:
            raise r.fail(f"the offsets table says task {i} starts at byte {offset}, it starts at byte {r.pos}")
        what = f"task {i}"
        question = r.string(f"the question of {what}")
        answers, labels = r.answers(f"mc1 of {what}")
        mc2, mc2_labels = r.answers(f"mc2 of {what}")
        task = Task(question, answers, labels, mc2, mc2_labels)
        _check_task(r, offset, what, task)
        tasks.append(task)
    return tasks


def _check_task(r: _Reader, at: int, what: str, task: Task) -> None:
    if not task.question or not task.answers:
        raise r.fail(f"{what} has an empty question or no answers (llama-perplexity stops there: 'found bad task')",
                     at)
    if any(not a for a in task.answers):
        raise r.fail(f"{what} has an empty answer (llama-perplexity stops there: 'found empty answer')", at)
    if 1 not in task.labels:
        raise r.fail(f"{what} marks no answer correct (labels {list(task.labels)}): it could only be scored wrong",
                     at)


def read_tasks(path: str | Path) -> list[Task]:
    path = Path(path)
    return decode_tasks(path.read_bytes(), path)


def write_tasks(tasks: list[Task], path: str | Path) -> dict:
    """The tasks as llama-perplexity reads them (-bf), written atomically and read back through decode_tasks;
    returns what the set's record keeps of the file (task_file_info)."""
    data = encode_tasks(tasks)
    decode_tasks(data, path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return task_file_info(data, tasks)


def task_file_info(data: bytes, tasks: list[Task]) -> dict:
    """What identifies a task file and what a job needs to know of it before running: sha256, size, count,
    the largest answer count (the -np the mode needs), and how many tasks have how many answers."""
    counts: dict[int, int] = {}
    for t in tasks:
        counts[len(t.answers)] = counts.get(len(t.answers), 0) + 1
    return {"sha256": hashlib.sha256(data).hexdigest(), "n_bytes": len(data), "n_tasks": len(tasks),
            "max_answers": max(counts), "answers_per_task": {str(k): counts[k] for k in sorted(counts)},
            "random_chance": sum(1 / len(t.answers) for t in tasks) / len(tasks)}


# --- the cloze generator -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClozeSettings:
    """The generator's knobs (config tasks.sets.<name>.cloze; the same defaults there). Measured on the demo (CPython
    3.11's help topics, 400 kB; SmolLM2-135M F16, llama.cpp 0c1e570 CPU), 300 questions each: 4 choices with 1, 2, 3
    sentences of context 40.7, 53.0, 53.3%; distractors from within 40 sentences 48.3 (2 of context), 45.3 (3);
    3 choices with 1, 2, 3 sentences 48.0, 57.7, 62.0%. The defaults (3 choices, 2 sentences, the whole document)
    give 926 questions there and 54.5% over all of them: inside 45-80%, with room both ways."""

    questions: int = 1000            # at most this many (fewer when the corpus has fewer usable places)
    choices: int = 3                 # the true next sentence and choices - 1 distractors
    context_sentences: int = 2       # sentences of context before the blank
    length_tolerance: float = 0.25   # a distractor's length within ±25% of the true sentence's (in characters)
    distractor_window: int | None = None  # drawn from sentences at most this far away in the document; None: anywhere
    min_chars: int = 30              # sentences shorter or longer than this are not used as answers or distractors
    max_chars: int = 220
    seed: int = 0

    def check(self, key: str) -> None:
        if not 2 <= self.choices <= MAX_ANSWERS:
            raise ConfigError(f"{key}.choices: {self.choices}; 2 to {MAX_ANSWERS}")
        if self.context_sentences < 1 or self.questions < 1:
            raise ConfigError(f"{key}: context_sentences and questions must be at least 1")
        if not 0 < self.length_tolerance < 1 or self.min_chars >= self.max_chars:
            raise ConfigError(f"{key}: length_tolerance must be in (0, 1) and min_chars below max_chars")


@dataclass(frozen=True)
class _Sentence:
    text: str
    doc: int
    run: int       # consecutive prose sentences share a run: a code block or heading between two starts another
    index: int     # position in its document
    usable: bool   # within min_chars..max_chars and ending a sentence: may be an answer or a distractor


_HEADING = re.compile(r"^ ?=+ [^=].*? =+ ?$")       # wikitext-style " = Title = " (and the demo corpus's)
_RULE = re.compile(r"^[*=\-~^#+]{3,}\s*$")          # reST underlines: ******, ======
_ABBREV = re.compile(r"\b(e\.g|i\.e|etc|vs|cf|Mr|Mrs|Dr|St|No|approx)\.", re.I)
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z])")
_PROTECT = "\x00"


def _documents(text: str) -> list[list[str]]:
    """The corpus's documents (split at top-level headings; the whole text when it has none), each as its
    blocks: paragraphs separated by blank lines."""
    docs: list[list[str]] = [[]]
    block: list[str] = []
    for line in text.splitlines():
        if _HEADING.match(line):
            docs[-1].append("\n".join(block))
            block = []
            docs.append([])
        elif line.strip():
            block.append(line)
        else:
            docs[-1].append("\n".join(block))
            block = []
    docs[-1].append("\n".join(block))
    return [[b for b in d if b] for d in docs if any(d)]


def _prose(block: str) -> str | None:
    """A paragraph of prose joined into one line (indented prose too: reference docs indent a definition's text);
    None for code, tables, grammar and underlined titles."""
    lines = textwrap.dedent(block).splitlines()
    if any(ln[:1].isspace() or _RULE.match(ln) for ln in lines) or lines[-1].rstrip().endswith(":"):
        return None  # uneven indentation (code, lists), an underlined title, or the lead-in to a code block
    joined = " ".join(ln.strip() for ln in lines)
    letters = sum(c.isalpha() or c == " " for c in joined)
    if joined.startswith(">>>") or "::=" in joined or letters < 0.8 * len(joined):
        return None  # an interactive session, grammar, or mostly symbols
    return joined


def sentences(text: str, settings: ClozeSettings) -> list[_Sentence]:
    """The corpus's prose sentences in order, each with its document and run (ends at [.!?]; common
    abbreviations are not ends)."""
    out: list[_Sentence] = []
    run = 0
    for d, blocks in enumerate(_documents(text)):
        run += 1
        index = 0
        for block in blocks:
            prose = _prose(block)
            if prose is None:
                run += 1  # context and blank must be one stretch of prose: what is not prose ends it
                continue
            protected = _ABBREV.sub(lambda m: m.group(0)[:-1] + _PROTECT, prose)
            for s in _SPLIT.split(protected):
                s = s.replace(_PROTECT, ".").strip()
                usable = settings.min_chars <= len(s) <= settings.max_chars and s[-1] in ".!?"
                out.append(_Sentence(s, d, run, index, usable))
                index += 1
    return out


def _distractors(pool: list[_Sentence], s: _Sentence, st: ClozeSettings, rng: random.Random) -> list[str]:
    near = [c for c in pool if c.usable and c.text != s.text and abs(c.index - s.index) > st.context_sentences
            and (st.distractor_window is None or abs(c.index - s.index) <= st.distractor_window)
            and abs(len(c.text) - len(s.text)) <= st.length_tolerance * len(s.text)]
    texts = sorted({c.text for c in near})
    if len(texts) < st.choices - 1:
        return []
    return rng.sample(texts, st.choices - 1)


def make_cloze(text: str, settings: ClozeSettings) -> list[Task]:
    """Questions from the corpus: context_sentences sentences of one stretch of prose, and as answers the sentence
    that follows them and choices - 1 sentences of the same document of similar length (seeded; the true answer's
    place among them is drawn too). Every sentence is the true answer at most once; places are taken in a seeded
    order, so a given seed and corpus give the same file byte for byte."""
    sents = sentences(text, settings)
    by_doc: dict[int, list[_Sentence]] = {}
    for s in sents:
        by_doc.setdefault(s.doc, []).append(s)
    k = settings.context_sentences
    places = [i for i in range(k, len(sents))
              if sents[i].usable and all(sents[j].run == sents[i].run for j in range(i - k, i))]
    rng = random.Random(settings.seed)
    rng.shuffle(places)
    chosen: list[tuple[int, Task]] = []
    for i in places:
        if len(chosen) == settings.questions:
            break
        s = sents[i]
        wrong = _distractors(by_doc[s.doc], s, settings, rng)
        if not wrong:
            continue
        gold = rng.randrange(settings.choices)
        answers = wrong[:gold] + [s.text] + wrong[gold:]
        chosen.append((i, Task(" ".join(x.text for x in sents[i - k:i]), tuple(answers),
                               tuple(int(j == gold) for j in range(settings.choices)))))
    return [t for _, t in sorted(chosen, key=lambda c: c[0])]  # in the corpus's order


# --- the registry of kinds ---------------------------------------------------------------------------------

@dataclass
class TaskSet:
    """What a task set's record (results/tasks/{taskset}/tasks.json) keeps: where it came from and which bytes."""

    name: str
    kind: str
    source: str
    file: dict                      # task_file_info: sha256, n_bytes, n_tasks, max_answers, ...
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


MakeTasks = Callable[..., TaskSet]
TASK_KINDS: dict[str, MakeTasks] = {}


def task_kind(name: str) -> Callable[[MakeTasks], MakeTasks]:
    """Register make(name, spec, out, *, corpus, corpus_record, lock) -> TaskSet as the task-set kind `name`."""
    def register(make: MakeTasks) -> MakeTasks:
        TASK_KINDS[name] = make
        return make
    return register


def make_task_set(name: str, spec: dict, out: Path, *, corpus: Path | None = None, corpus_record: dict | None = None,
                  lock: str | Path | None = None) -> TaskSet:
    """The task set `name` (config tasks.sets.<name>: one kind key) as a checked .bin at out; its record."""
    if len(spec) != 1:
        raise ConfigError(f"tasks.sets.{name}: one kind key ({', '.join(TASK_KINDS)}), found {sorted(spec) or 'none'}")
    kind = next(iter(spec))
    if kind not in TASK_KINDS:
        raise ConfigError(f"tasks.sets.{name}: unknown kind {kind!r}; known: {', '.join(TASK_KINDS)}")
    return TASK_KINDS[kind](name, spec[kind] or {}, Path(out), corpus=corpus, corpus_record=corpus_record, lock=lock)


def _copy_checked(src: Path, out: Path) -> dict:
    data = src.read_bytes()
    tasks = decode_tasks(data, src)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return task_file_info(data, tasks)


@task_kind("local")
def _local(name: str, spec: dict, out: Path, **_) -> TaskSet:
    key = f"tasks.sets.{name}.local"
    path = Path(spec["path"]).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{key}.path: {path} is not a file")
    info = _copy_checked(path, out)
    if spec.get("sha256") and info["sha256"] != spec["sha256"]:
        out.unlink(missing_ok=True)
        raise ConfigError(f"{key}: {path} has sha256 {info['sha256']}, the config says {spec['sha256']}: "
                          "the file changed; check it and update the sha256")
    return TaskSet(name, "local", str(path), info)


@task_kind("hub")
def _hub(name: str, spec: dict, out: Path, *, lock=None, **_) -> TaskSet:
    from .hub import download_quant  # one pinned, sha256-checked download path for every hub file

    revision = spec.get("revision", "main")
    files, origin = download_quant(spec["repo"], out.parent / "hub", filename=spec["file"], revision=revision,
                                   lock=lock, repo_type="dataset")
    info = _copy_checked(Path(files[0]).resolve(), out)
    return TaskSet(name, "hub", f"hf://datasets/{spec['repo']}@{origin['commit']}/{spec['file']}", info,
                   {"revision": revision, "commit": origin["commit"], "locked": origin["locked"]})


@task_kind("cloze")
def _cloze(name: str, spec: dict, out: Path, *, corpus: Path | None = None, corpus_record: dict | None = None,
           **_) -> TaskSet:
    key = f"tasks.sets.{name}.cloze"
    if corpus is None:
        raise ConfigError(f"{key}: a cloze set is made from a corpus; the rule gave none")
    settings = ClozeSettings(**{k: v for k, v in spec.items() if k != "corpus"})
    settings.check(key)
    tasks = make_cloze(Path(corpus).read_text(encoding="utf-8"), settings)
    if len(tasks) < 2:
        raise ConfigError(f"{key}: the corpus {spec.get('corpus')!r} gives {len(tasks)} questions with these "
                          "settings: use a longer corpus, fewer choices or a wider length_tolerance")
    info = write_tasks(tasks, out)
    rec = corpus_record or {}
    return TaskSet(name, "cloze", f"cloze of corpus {rec.get('name', spec.get('corpus'))} "
                   f"(sha256 {rec.get('sha256', '?')})", info,
                   {**asdict(settings), "corpus": spec.get("corpus"), "corpus_sha256": rec.get("sha256")})
