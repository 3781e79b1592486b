"""Voicemail: mailboxes kept in the data directory and the store, deposit (`voicemail MAILBOX`), mailbox
access (`*97`/`*98`), message-waiting indication and voicemail to e-mail.

`boxes.IMailboxes` is the seam between them: the deposit and access applications use only it.
"""
