"""Chat-platform bots: WeCom, DingTalk, Feishu/Lark and Slack answer as an assistant.

`adapter.py` is what every platform adapter provides (verify a callback, send a reply);
`runner.py` acknowledges a verified callback at once and answers in the background through
`AnswerService`; `store.py` keeps bots, their chat threads and the nonces seen.
"""
