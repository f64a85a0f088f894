"""OSWorld task files, typed: ``load_task(path)`` and ``load_split(name_or_path)``.

The shapes are those of the 369 files of OSWorld's ``evaluation_examples`` (see
../shared/docs/osworld.md). Step parameters are strict (a misspelt parameter would otherwise be
dropped and the step run differently); the task and evaluator keep keys we do not know (OSWorld
annotates files with ``hint``, ``_config_note`` and the like), and so do getter configs, whose
parameters differ per getter type. Any problem is a ``TaskError``: one line naming file and field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from agent.jsonfile import JSONFileError, read_json

DEFAULT_DIR_VAR = "KIMI_OSWORLD_DIR"


class TaskError(ValueError):
    """A task or split file that cannot be used; the message is one line naming file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Command = str | list[str]


class DownloadFile(_Strict):
    url: str = Field(min_length=1)
    path: str = Field(min_length=1)


class DownloadParams(_Strict):
    files: list[DownloadFile] = Field(min_length=1)


class CommandParams(_Strict):
    """launch, execute and command. ``stdout``/``stderr`` name files in the cache dir that receive
    the output; ``until`` repeats the command until its result matches (OSWorld's SetupController)."""

    command: Command
    # OSWorld's server takes any truthy value; the corpus writes "true" in five places.
    shell: bool = False
    stdout: str = ""
    stderr: str = ""
    until: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> CommandParams:
        if not self.command or (isinstance(self.command, str) and not self.command.strip()):
            raise ValueError("command is empty")
        return self


class OpenParams(_Strict):
    path: str = Field(min_length=1)


class WindowParams(_Strict):
    window_name: str = Field(min_length=1)
    strict: bool = False
    by_class: bool = False


class SleepParams(_Strict):
    seconds: float = Field(ge=0)


class OpenTabsParams(_Strict):
    urls_to_open: list[str] = Field(min_length=1)


class CloseTabsParams(_Strict):
    urls_to_close: list[str] = Field(min_length=1)


class HistoryItem(_Strict):
    url: str
    title: str
    visit_time_from_now_in_seconds: float


class HistoryParams(_Strict):
    history: list[HistoryItem] = Field(min_length=1)


class GoogleDriveParams(_Strict):
    settings_file: str
    operation: list[str]
    args: list[dict[str, Any]]


class LoginParams(_Strict):
    settings_file: str
    platform: str


PARAMS: dict[str, type[BaseModel]] = {
    "download": DownloadParams,
    "launch": CommandParams,
    "execute": CommandParams,
    "command": CommandParams,
    "open": OpenParams,
    "activate_window": WindowParams,
    "close_window": WindowParams,
    "sleep": SleepParams,
    "chrome_open_tabs": OpenTabsParams,
    "chrome_close_tabs": CloseTabsParams,
    "update_browse_history": HistoryParams,
    "googledrive": GoogleDriveParams,
    "login": LoginParams,
}


class Step(BaseModel):
    """One setup step ``{type, parameters}``. A type outside ``PARAMS`` loads with its parameters as
    a plain dict, so that running it can report it as unsupported instead of the file failing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: str = Field(min_length=1)
    parameters: Any = Field(default_factory=dict)

    @field_validator("parameters", mode="before")
    @classmethod
    def _typed_parameters(cls, params: Any, info: ValidationInfo) -> Any:
        model = PARAMS.get(info.data.get("type", ""))
        if model is not None:
            return model.model_validate(params)
        if not isinstance(params, dict):
            raise ValueError("parameters must be an object")
        return params


class Getter(BaseModel):
    """A getter config ``{type, ...}``; the other keys are the getter's own parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = Field(min_length=1)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Metric(BaseModel):
    """One metric of an evaluator with its getters and options, lists resolved."""

    model_config = ConfigDict(frozen=True)
    func: str
    result: Getter | None
    expected: Getter | None
    options: dict[str, Any]


def _is_list(v: Any) -> Literal["list", "one"]:
    return "list" if isinstance(v, list) else "one"


GetterOrList = Annotated[
    Annotated[list[Getter], Tag("list")] | Annotated[Getter, Tag("one")], Discriminator(_is_list)
]
OptionsOrList = Annotated[
    Annotated[list[dict[str, Any]], Tag("list")] | Annotated[dict[str, Any], Tag("one")],
    Discriminator(_is_list),
]


class Evaluator(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    func: str | list[str]
    conj: Literal["and", "or"] = "and"
    result: GetterOrList | None = None
    expected: GetterOrList | None = None
    options: OptionsOrList | None = None
    postconfig: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _aligned(self) -> Evaluator:
        funcs = self.func if isinstance(self.func, list) else None
        if funcs is not None and not funcs:
            raise ValueError("func is an empty list")
        if any(not f for f in ([self.func] if funcs is None else funcs)):
            raise ValueError("func names an empty metric")
        for name in ("result", "expected", "options"):
            value = getattr(self, name)
            if value is None:
                continue
            if funcs is None and isinstance(value, list):
                raise ValueError(f"{name} is a list but func is a single metric")
            if funcs is not None and (not isinstance(value, list) or len(value) != len(funcs)):
                raise ValueError(f"{name} must be a list of {len(funcs)} entries, one per metric in func")
        return self

    @property
    def funcs(self) -> list[str]:
        return self.func if isinstance(self.func, list) else [self.func]

    def metrics(self) -> list[Metric]:
        """The metrics with their getters and options, one per entry of ``func``."""

        def at(value: Any, i: int) -> Any:
            return value[i] if isinstance(value, list) else value

        return [
            Metric(
                func=f,
                result=at(self.result, i),
                expected=at(self.expected, i),
                options=at(self.options, i) or {},
            )
            for i, f in enumerate(self.funcs)
        ]

    def getter_types(self) -> list[str]:
        return [g.type for m in self.metrics() for g in (m.result, m.expected) if g is not None]


class Task(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str = Field(min_length=1)
    snapshot: str
    instruction: str = Field(min_length=1)
    source: str | list[str] = ""
    trajectory: str = ""
    related_apps: list[str] = Field(default_factory=list)
    config: list[Step] = Field(default_factory=list)
    evaluator: Evaluator
    proxy: bool = False
    fixed_ip: bool = False
    possibility_of_env_change: str = "low"
    hint: str | None = None
    env_may_change: bool | None = None
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def domain(self) -> str:
        """The directory the file lies in (examples/<domain>/<id>.json); ``snapshot`` is not
        normalised in the corpus (vscode / vs_code, multiapps / multi_apps)."""
        return self._path.parent.name if self._path is not None else self.snapshot

    def steps(self) -> list[Step]:
        """Setup then postconfig, in the order a run meets them."""
        return [*self.config, *self.evaluator.postconfig]


_UNION_TAGS = {"list", "one", "str", "list[str]", "bool", "int", "float"}


def _where(loc: tuple[int | str, ...]) -> str:
    # Tags of our unions ("list"/"one", "str"/"list[str]") are not part of the file's structure.
    parts = [str(p) for p in loc if p not in _UNION_TAGS]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "(top level)"


def validation_line(path: Path | str, e: ValidationError) -> str:
    errors = e.errors()
    first = errors[0]
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{path}: {_where(tuple(first['loc']))}: {msg}{more}"


def parse_task(data: Any, path: Path | str = "<task>") -> Task:
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file must hold a JSON object, not {type(data).__name__}")
    try:
        task = Task.model_validate(data)
    except ValidationError as e:
        raise TaskError(validation_line(path, e)) from None
    task._path = Path(path)
    return task


def load_task(path: Path | str) -> Task:
    """Load one task file; a file named ``<id>.json`` must hold that id."""
    path = Path(path)
    try:
        data = read_json(path)
    except JSONFileError as e:
        raise TaskError(str(e)) from None
    task = parse_task(data, path)
    if path.suffix == ".json" and path.stem != task.id and _looks_like_id(path.stem):
        raise TaskError(f"{path}: id: {task.id!r} does not match the file name")
    return task


def _looks_like_id(stem: str) -> bool:
    # OSWorld names files by their UUID id; other names (a copy in tests/data) are not checked.
    return len(stem) == 36 and stem.count("-") == 4


class SplitEntry(BaseModel):
    model_config = ConfigDict(frozen=True)
    domain: str
    task_id: str
    path: Path


class Split(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    path: Path
    entries: list[SplitEntry]

    def domains(self) -> list[str]:
        return list(dict.fromkeys(e.domain for e in self.entries))

    def load(self) -> list[Task]:
        """Every task of the split; the first that cannot be loaded raises its TaskError."""
        return [load_task(e.path) for e in self.entries]


def osworld_dir(explicit: Path | str | None = None) -> Path:
    """Where OSWorld's ``evaluation_examples`` lie: the argument, else $KIMI_OSWORLD_DIR, else
    ./evaluation_examples (the layout of OSWorld's repository)."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(DEFAULT_DIR_VAR) or "evaluation_examples")


def load_split(name_or_path: Path | str, examples_dir: Path | str | None = None) -> Split:
    """A split file ``{domain: [task ids]}`` (test_all.json, test_small.json, ...), given as a path
    or by name (``test_small``) inside ``osworld_dir()``. Task files are resolved as
    ``<examples_dir>/<domain>/<id>.json``, ``examples_dir`` defaulting to ``examples/`` beside the
    split file. A missing task file is a TaskError naming it."""
    raw = Path(name_or_path)
    path = raw
    if not raw.suffix and not raw.exists():
        path = osworld_dir() / f"{raw.name}.json"
    try:
        data = read_json(path)
    except JSONFileError as e:
        hint = (
            ""
            if path.exists()
            else f" (no such split; set ${DEFAULT_DIR_VAR} to OSWorld's evaluation_examples)"
        )
        raise TaskError(f"{e}{hint}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a split file must hold an object {{domain: [task ids]}}")
    examples = Path(examples_dir) if examples_dir is not None else path.parent / "examples"
    entries: list[SplitEntry] = []
    for domain, ids in data.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise TaskError(f"{path}: {domain}: must be a list of task ids")
        for task_id in ids:
            file = examples / domain / f"{task_id}.json"
            if not file.is_file():
                raise TaskError(f"{path}: {domain}: task {task_id} has no file {file}")
            entries.append(SplitEntry(domain=domain, task_id=task_id, path=file))
    return Split(name=path.stem, path=path, entries=entries)
