"""Comments: newest first, filtered by tag, verdict and stars; hide a comment or a whole conversation."""

from __future__ import annotations

import streamlit as st

from db.session import session_scope
from db.vocabulary import WINNER_ARMS
from feedback.moderation import (
    CommentFilter,
    ModerationRefused,
    comment_feed,
    hidden_counts,
    hide_comment,
    hide_conversation,
    unhide_comment,
    unhide_conversation,
    used_tags,
)
from playground.organizer_access import allowed_event_ids, database_url, require_identity, scope_picker
from playground.untrusted import inert

PAGE_SIZE = 50
identity = require_identity()
url = database_url()
allowed = allowed_event_ids(identity)
st.title("Comments")
scope, _ = scope_picker(url, identity, key="comments_scope")
with session_scope(url) as session:
    tags = used_tags(session, allowed)
    hidden_votes, hidden_conversations = hidden_counts(session, allowed)

columns = st.columns(4)
tag = columns[0].selectbox("Tag", [None, *tags], format_func=lambda t: "any" if t is None else t, key="filter_tag")
arm = columns[1].selectbox(
    "Verdict", [None, *WINNER_ARMS], format_func=lambda a: "any" if a is None else a, key="filter_arm"
)
stars = columns[2].selectbox(
    "Stars", [None, 1, 2, 3, 4, 5], format_func=lambda s: "any" if s is None else "★" * s, key="filter_stars"
)
include_hidden = columns[3].toggle("Show hidden", key="filter_hidden")
st.caption(
    f"Hidden so far: {hidden_votes} comment(s), {hidden_conversations} conversation(s). "
    "Hidden items stay in the database but leave reports, exports and the live numbers."
)


def _moderate(action, item_id: int, *by: str) -> None:  # noqa: ANN001
    try:
        with session_scope(url) as session:
            action(session, item_id, *by, allowed_event_ids=allowed)
    except ModerationRefused as error:
        st.session_state["moderation_error"] = str(error)


if error := st.session_state.pop("moderation_error", None):
    st.error(error)

where = CommentFilter(
    event_ids=scope.event_ids, region=scope.region, tag=tag, winner_arm=arm, stars=stars, include_hidden=include_hidden
)
with session_scope(url) as session:
    comments = comment_feed(session, where, limit=PAGE_SIZE)
if not comments:
    st.info("No comments match these filters yet.")
for comment in comments:
    with st.container(border=True):
        head = f"**{comment.event_code}** · {comment.created_at:%Y-%m-%d %H:%M} UTC · verdict **{comment.winner_arm}**"
        if comment.stars:
            head += " · " + ", ".join(f"{arm}: {'★' * n}" for arm, n in comment.stars.items())
        st.markdown(head)
        if comment.hidden:
            what = "conversation" if comment.conversation_hidden else "comment"
            st.caption(f"Hidden ({what}) by {inert(comment.hidden_by or '')}")
        st.markdown(inert(comment.comment))  # attendee text: never a link, image or heading
        if comment.tags:
            st.caption("Tags: " + "; ".join(f"{arm}: {inert(', '.join(t))}" for arm, t in comment.tags.items()))
        with st.expander("Prompt"):
            st.text(comment.prompt)
        left, right = st.columns(2)
        if comment.hidden and not comment.conversation_hidden:
            left.button(
                "Unhide comment",
                key=f"unhide_vote_{comment.vote_id}",
                on_click=_moderate,
                args=(unhide_comment, comment.vote_id),
            )
        elif not comment.hidden:
            left.button(
                "Hide comment",
                key=f"hide_vote_{comment.vote_id}",
                on_click=_moderate,
                args=(hide_comment, comment.vote_id, identity.username),
            )
        if comment.conversation_hidden:
            right.button(
                "Unhide conversation",
                key=f"unhide_conv_{comment.vote_id}",
                on_click=_moderate,
                args=(unhide_conversation, comment.conversation_id),
            )
        else:
            right.button(
                "Hide conversation",
                key=f"hide_conv_{comment.vote_id}",
                on_click=_moderate,
                args=(hide_conversation, comment.conversation_id, identity.username),
            )
