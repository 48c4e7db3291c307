"""Guards: cheap synchronous checks on every answer (pure functions of request + answer, no I/O).

    chain = build_guards(route.guards, policy.taxonomy)   # ValueError on unknown guard / bad options
    failures = chain.run(request_body, answer_body)        # [] = pass; each a GuardResult

`answer_body` is a non-streamed `chat.completion` (or `text_completion`); assemble a stream first with
`proxy.assembly.StreamAssembler`. See each guard module for its options and classes.

Every regular expression taken from a policy (regex guards, rule scorers) is compiled by
`compile_policy_regex` (RE2, linear time; see `_policy_regex`).
"""

from proxy.guards._chain import (
    DEFAULT_TAXONOMY,
    GUARD_ERROR_CLASS,
    GUARD_NAMES,
    TAXONOMY_TABLE,
    Guard,
    GuardChain,
    build_guards,
    guard_classes,
    parse_spec,
)
from proxy.guards._context import AnswerContext
from proxy.guards._options import GuardOptionError
from proxy.guards._policy_regex import PolicyRegex, PolicyRegexError, compile_policy_regex, literal_alternation
from proxy.guards._result import GuardResult
from proxy.guards._schema import SCHEMAS, SchemaCache

__all__ = [
    "DEFAULT_TAXONOMY",
    "GUARD_ERROR_CLASS",
    "GUARD_NAMES",
    "TAXONOMY_TABLE",
    "AnswerContext",
    "Guard",
    "GuardChain",
    "GuardOptionError",
    "GuardResult",
    "PolicyRegex",
    "PolicyRegexError",
    "SCHEMAS",
    "SchemaCache",
    "build_guards",
    "compile_policy_regex",
    "guard_classes",
    "literal_alternation",
    "parse_spec",
]
