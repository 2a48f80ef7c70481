"""MQTT topic router, pure Python: the executable specification of the Rust router.

Topic filters are mapped to integer targets and matched through a trie, with MQTT
3.1.1 / 5.0 semantics exactly:

- ``+`` matches exactly one level, including an empty one (``a/+`` matches ``a/``);
- ``#`` matches the rest of the topic including the parent level (``a/#`` matches ``a``);
- empty levels are levels (``a//b``, ``/a``, ``a/`` each have an empty level);
- a topic whose first level starts with ``$`` is not matched by a filter whose first level
  is a wildcard (``#``, ``+/x``), but is matched by ``$SYS/#`` or ``$edge/+/twin``.

Invalid filters and topics raise :class:`~edgenode.errors.TopicError` with a message that
names the problem and quotes the input; ``crates/edgecore_fast/src/router.rs`` produces
byte-identical messages, and the differential tests hold the two equal. Matching is
iterative (a frontier of trie nodes, one level at a time), so a topic of 10,000 levels
cannot exhaust the stack.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from itertools import islice

from edgenode.errors import TopicError

MAX_TOPIC_BYTES = 65535
"""The MQTT limit on the UTF-8 length of a topic name or topic filter."""

QUOTE_MAX_CHARS = 64
"""Error messages quote at most this many characters of the offending input."""

TARGET_LIMIT = 2**63
"""Targets are ints in ``0 <= target < TARGET_LIMIT`` (a signed 64-bit integer)."""

# Ints in this range are printed in error messages; larger ones are described by size,
# because printing a huge int is slow (and refused past sys.get_int_max_str_digits()).
_PRINTABLE_INT_LIMIT = 2**127

_FILTER = "topic filter"
_NAME = "topic name"
_SURROGATES = range(0xD800, 0xE000)
_C1_CONTROLS = range(0x7F, 0xA0)


def _quote(text: str) -> str:
    """Quote ``text`` for a message: escaped, at most QUOTE_MAX_CHARS characters."""
    parts = ['"']
    for char in text[:QUOTE_MAX_CHARS]:
        code = ord(char)
        if char in '"\\':
            parts.append("\\" + char)
        elif code in _SURROGATES:
            parts.append(f"\\u{code:04x}")
        elif code < 0x20 or code in _C1_CONTROLS:
            parts.append(f"\\x{code:02x}")
        else:
            parts.append(char)
    parts.append('"')
    if len(text) > QUOTE_MAX_CHARS:
        parts.append("...")
    return "".join(parts)


def _error(kind: str, text: str, problem: str) -> TopicError:
    return TopicError(f"invalid {kind} {_quote(text)}: {problem}")


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _check_common(kind: str, text: str) -> None:
    """Checks shared by filters and names, in the order both backends apply them."""
    if not text:
        raise _error(kind, text, "must not be empty")
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            index = next(i for i, char in enumerate(text) if ord(char) in _SURROGATES)
            problem = (
                f"not encodable as UTF-8 (lone surrogate U+{ord(text[index]):04X} "
                f"at character {index})"
            )
            raise _error(kind, text, problem) from None
    if size > MAX_TOPIC_BYTES:
        raise _error(
            kind, text, f"{size} UTF-8 bytes, more than the MQTT limit of {MAX_TOPIC_BYTES}"
        )
    if "\0" in text:
        raise _error(kind, text, f"contains NUL (U+0000) at character {text.index(chr(0))}")


def validate_filter(filter: str) -> None:
    """Raise TopicError naming the problem if ``filter`` is not a valid MQTT filter."""
    text = _require_str(filter, "filter")
    _check_common(_FILTER, text)
    levels = text.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level:
            if level != "#":
                raise _error(_FILTER, text, "'#' must occupy a whole level")
            if index != last:
                raise _error(_FILTER, text, "'#' must be the last level")
        elif "+" in level and level != "+":
            raise _error(_FILTER, text, "'+' must occupy a whole level")


def validate_topic(topic: str) -> None:
    """Raise TopicError naming the problem if ``topic`` is not a valid topic name."""
    text = _require_str(topic, "topic")
    _check_common(_NAME, text)
    positions = [i for i in (text.find("+"), text.find("#")) if i >= 0]
    if positions:
        index = min(positions)
        raise _error(
            _NAME,
            text,
            f"wildcard '{text[index]}' at character {index} is not allowed in a topic name",
        )


def _check_target(target: object) -> int:
    """A target: an ``int`` (``bool`` is refused as surely a mistake) below 2**63."""
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"target must be an int, not {type(target).__name__}")
    value = int(target)  # a plain int, also for int subclasses such as IntEnum members
    if not 0 <= value < TARGET_LIMIT:
        if -_PRINTABLE_INT_LIMIT <= value < _PRINTABLE_INT_LIMIT:
            shown = str(value)
        else:
            shown = f"an int of {value.bit_length()} bits"
        raise ValueError(f"target must be an int in 0 <= target < 2**63, got {shown}")
    return value


class _Node:
    """One trie node: the filters whose levels so far lead here."""

    __slots__ = ("children", "hash_targets", "plus", "targets")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}  # exact levels
        self.plus: _Node | None = None  # the '+' child
        self.targets: set[int] = set()  # filters ending here
        self.hash_targets: set[int] = set()  # filters ending here with a final '#'

    def is_empty(self) -> bool:
        return not (self.children or self.plus or self.targets or self.hash_targets)


def _split_filter(filter: str) -> tuple[list[str], bool]:
    """The levels forming a valid filter's trie path, and whether it ends with ``#``."""
    levels = filter.split("/")
    if levels[-1] == "#":
        return levels[:-1], True
    return levels, False


class TopicRouter:
    """MQTT topic filters -> integer targets, matched through a trie.

    Targets are ``int`` in ``0 <= target < 2**63``: ValueError outside that range,
    TypeError for anything else (``bool`` included). Checks run in a fixed order that
    both backends share: the filter's type, its validity, then the target.
    """

    __slots__ = ("_pairs", "_root")

    def __init__(self) -> None:
        self._root = _Node()
        self._pairs = 0

    def __len__(self) -> int:
        """Number of (filter, target) pairs."""
        return self._pairs

    def add(self, filter: str, target: int) -> bool:
        """Add the pair; False if it was already there. TopicError on a bad filter."""
        validate_filter(filter)
        value = _check_target(target)
        levels, ends_with_hash = _split_filter(filter)
        node = self._root
        for level in levels:
            if level == "+":
                if node.plus is None:
                    node.plus = _Node()
                node = node.plus
            else:
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
                node = child
        targets = node.hash_targets if ends_with_hash else node.targets
        if value in targets:
            return False
        targets.add(value)
        self._pairs += 1
        return True

    def remove(self, filter: str, target: int) -> bool:
        """Remove the pair; False if it was not there. TopicError on a bad filter."""
        validate_filter(filter)
        value = _check_target(target)
        levels, ends_with_hash = _split_filter(filter)
        path: list[tuple[_Node, str]] = []  # (parent, level taken), to prune afterwards
        node = self._root
        for level in levels:
            child = node.plus if level == "+" else node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        targets = node.hash_targets if ends_with_hash else node.targets
        if value not in targets:
            return False
        targets.remove(value)
        self._pairs -= 1
        # Drop the nodes this removal left empty, so no dead branch is walked again.
        while path and node.is_empty():
            parent, level = path.pop()
            if level == "+":
                parent.plus = None
            else:
                del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> list[int]:
        """Targets whose filter matches ``topic``, each once, ascending."""
        if not _is_plainly_valid(topic):
            validate_topic(topic)
        return self._collect(topic)

    def match_many(self, topics: Iterable[str]) -> list[list[int]]:
        """``[match(t) for t in topics]`` in one call."""
        iterator = _topic_batch(topics)
        collect = self._collect
        results: list[list[int]] = []
        for topic in iterator:
            if not _is_plainly_valid(topic):
                validate_topic(topic)
            results.append(collect(topic))
        return results

    def match_flat(self, topics: Iterable[str]) -> tuple[array[int], array[int]]:
        """``match_many`` flat: ``(ids, offsets)``, two ``array('q')``; the targets of
        ``topics[i]`` are ``ids[offsets[i]:offsets[i + 1]]`` (``len(offsets)`` is one more
        than the number of topics). No Python object per topic: no list for the garbage
        collector to walk. Same errors as ``match_many``."""
        iterator = _topic_batch(topics)
        collect = self._collect
        ids: array[int] = array("q")
        offsets: array[int] = array("q", [0])
        for topic in iterator:
            if not _is_plainly_valid(topic):
                validate_topic(topic)
            found = collect(topic)
            if found:
                ids.extend(found)
            offsets.append(len(ids))
        return ids, offsets

    def _collect(self, topic: str) -> list[int]:
        """Walk the trie level by level, keeping the set of nodes the topic reaches.

        Every node has one path from the root, so the frontier never holds duplicates.
        """
        levels = topic.split("/")
        root = self._root
        found: list[int] = []
        child = root.children.get(levels[0])
        # MQTT 4.7.2: wildcards in the first level never match a `$` topic.
        if topic[0] == "$":
            if child is None:
                return found
            frontier = [child]
        else:
            found.extend(root.hash_targets)
            plus = root.plus
            if child is None:
                if plus is None:
                    return _unique_sorted(found)
                frontier = [plus]
            else:
                frontier = [child] if plus is None else [child, plus]
        for level in islice(levels, 1, None):
            following: list[_Node] = []
            for node in frontier:
                if node.hash_targets:
                    found.extend(node.hash_targets)
                child = node.children.get(level)
                if child is not None:
                    following.append(child)
                if node.plus is not None:
                    following.append(node.plus)
            if not following:
                return _unique_sorted(found)
            frontier = following
        for node in frontier:
            found.extend(node.targets)
            # `a/#` matches `a`: '#' also covers the parent level.
            found.extend(node.hash_targets)
        return _unique_sorted(found)


def _is_plainly_valid(topic: object) -> bool:
    """The hot-path check: an ASCII str without NUL or wildcards, within the limit."""
    return (
        type(topic) is str
        and topic.isascii()
        and 0 < len(topic) <= MAX_TOPIC_BYTES
        and "+" not in topic
        and "#" not in topic
        and "\0" not in topic
    )


def _unique_sorted(found: list[int]) -> list[int]:
    return sorted(set(found)) if len(found) > 1 else found


def _topic_batch(topics: Iterable[str]) -> Iterator[str]:
    """An iterator over a batch of topics (TypeError for what is not one)."""
    # A str is iterable, but a batch of one-character topics is surely a mistake.
    if isinstance(topics, str):
        raise TypeError(f"topics must be a sequence of str, not {type(topics).__name__}")
    try:
        return iter(topics)
    except TypeError:
        raise TypeError(f"topics must be a sequence of str, not {type(topics).__name__}") from None
