"""The one exception family windtunnel raises for bad input; the CLI prints it as one line."""

__all__ = ["WindtunnelError", "SpecError", "one_line", "did_you_mean", "yaml_line"]


class WindtunnelError(Exception):
    """Any error a user can fix; its message says what is wrong and what is allowed."""


class SpecError(WindtunnelError):
    """A bad value in a spec: names the file, the key, the value and what is allowed."""

    def __init__(self, file, key: str, value, allowed: str):
        self.file, self.key, self.value, self.allowed = file, key, value, allowed
        line = yaml_line(file, key)
        super().__init__(f"{file}{f':{line}' if line else ''}: {key}={value!r} is not allowed; {allowed}")

    def __reduce__(self):  # so the error crosses process boundaries (Ray tasks, process pools) intact
        return (SpecError, (self.file, self.key, self.value, self.allowed))


def one_line(err: BaseException) -> str:
    """The last non-empty line of an error (a remote traceback's message), at most 300 characters."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:300]


SYNONYMS = {  # what other tools call a TrainSpec or ModelSpec field
    "learning_rate": "lr", "max_lr": "lr", "batch_size": "batch_tokens", "global_batch_size": "batch_tokens",
    "micro_batch_size": "micro_batch_tokens", "context_length": "seq_len", "seq_length": "seq_len",
    "block_size": "seq_len", "max_seq_len": "seq_len", "max_grad_norm": "grad_clip", "clip_grad": "grad_clip",
    "wd": "weight_decay", "adam_beta1": "beta1", "adam_beta2": "beta2", "adam_eps": "eps", "lr_schedule": "schedule",
    "lr_scheduler": "schedule", "max_steps": "tokens", "train_tokens": "tokens", "hidden_size": "d_model",
    "n_embd": "d_model", "dim": "d_model", "num_layers": "n_layers", "n_layer": "n_layers", "num_heads": "n_heads",
    "n_head": "n_heads", "num_kv_heads": "n_kv_heads", "intermediate_size": "d_ff", "ffn_dim": "d_ff",
    "vocab": "vocab_size", "warmup": "warmup_tokens", "warmup_steps": "warmup_tokens", "dataset": "corpus"}


def did_you_mean(name: str, known) -> str:
    """"did you mean 'x'? " for the known name closest to `name` (the same name in another case first, then a close
    spelling), or "" when none is close: the start of an error's list of allowed names."""
    import difflib

    known = [str(k) for k in known]
    name = str(name)
    close = ([k for k in known if k.lower() == name.lower()] or [k for k in known if k == SYNONYMS.get(name)]
             or difflib.get_close_matches(name, known, 1, 0.8))
    return f"did you mean {close[0]!r}? " if close else ""


def yaml_line(file, key: str) -> int | None:
    """The line of dotted `key` ("scales.micro.branches.at_tokens") in YAML `file` — of its deepest part the file
    has — or None when `file` is not a YAML file. Names may hold dots ("micro-1.3m"): the longest that matches wins."""
    from pathlib import Path

    import yaml

    path = Path(str(file))
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    try:
        node = yaml.compose(path.read_text())
    except yaml.YAMLError:
        return None
    line, parts = None, str(key).split(".")
    while parts and isinstance(node, yaml.MappingNode):
        for n in range(len(parts), 0, -1):
            name = ".".join(parts[:n])
            match = next(((k, v) for k, v in node.value if k.value == name), None)
            if match:
                line, node, parts = match[0].start_mark.line + 1, match[1], parts[n:]
                break
        else:
            break
    return line
