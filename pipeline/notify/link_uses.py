"""Single use of signed approval links, recorded in SQL in the transaction that records the decision."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from pipeline.store.tables import LinkUseRow, utcnow

if TYPE_CHECKING:
    from pipeline.auth.principal import Principal
    from pipeline.store.tables import ApprovalRow


def used(s: Session, link_id: str) -> bool:
    return s.get(LinkUseRow, link_id) is not None


def use(s: Session, link_id: str, approval: ApprovalRow, principal: Principal) -> str | None:
    """Record that ``link_id`` decided ``approval``; the reason to refuse when it was used before."""
    if used(s, link_id):
        return "this approval link was already used"
    s.add(LinkUseRow(link_id=link_id, approval_id=approval.id, principal_id=principal.id, used_at=utcnow()))
    return None
