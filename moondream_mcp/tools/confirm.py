"""Confirmation before harm: a destructive or costly tool asks the user (MCP elicitation) before it acts.

A tool takes `answer: Annotated[Answer, Resolve(its_question)]`; the SDK runs the question before the
tool body, over whichever way the connection asks a client (a request mid-call on handshake-era
connections, an input-required round on newer ones). A question is a module-level resolver that returns
`ask(ctx, message)`: without elicitation support, that is an answer of yes, and the tool behaves as it
always did.
"""

from __future__ import annotations

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from ..state import Ctx

_INPUT_REQUIRED_VERSION = "2026-07-28"  # from this revision, elicitation rides an input-required round


class Confirmation(BaseModel):
    confirm: bool = Field(default=True, title="Go ahead", description="Untick to cancel.")


Answer = ElicitationResult[Confirmation]


def ask(ctx: Ctx, message: str) -> Confirmation | Elicit[Confirmation]:
    """`message` put to the user when the client can show it; otherwise an answer of yes."""
    return Elicit(message, Confirmation) if can_ask(ctx) else Confirmation()


def can_ask(ctx: Ctx) -> bool:
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    # A bare `elicitation: {}` predates modes and means forms; url-only clients cannot show a form.
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, _INPUT_REQUIRED_VERSION):
        return True
    return ctx.session.can_send_request  # stateless HTTP has no way to ask mid-call


def require_yes(answer: Answer, refused: str) -> None:
    """Stop the tool unless the user said yes; `refused` says what was not done."""
    if isinstance(answer, AcceptedElicitation) and answer.data.confirm:
        return
    how = "declined" if answer.action in ("decline", "accept") else "cancelled"
    raise ToolError(f"the user {how}: {refused}. Do not retry unless the user asks for it.")
