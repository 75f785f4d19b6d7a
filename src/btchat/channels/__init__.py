"""Channels (group chats): the ``.chat`` file, the channel key schedule, member lists.

Sans-I/O formats only (``ChatFile.save``/``load`` aside). Discovery, the member mesh
and message relay build on these.
"""

from btchat.channels.chatfile import ChatFile, ChatFileError, is_channel_uri
from btchat.channels.keys import (
    ChannelKeyError,
    ChannelKeys,
    GenerationKey,
    membership_proof,
    new_generation_key,
    open_generation_key,
    seal_generation_key,
    verify_membership_proof,
)
from btchat.channels.members import Member, MemberList, MemberListError, Role

__all__ = [
    "ChannelKeyError",
    "ChannelKeys",
    "ChatFile",
    "ChatFileError",
    "GenerationKey",
    "Member",
    "MemberList",
    "MemberListError",
    "Role",
    "is_channel_uri",
    "membership_proof",
    "new_generation_key",
    "open_generation_key",
    "seal_generation_key",
    "verify_membership_proof",
]
