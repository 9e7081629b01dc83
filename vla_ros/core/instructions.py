"""What makes an instruction acceptable as a goal, before any model sees it."""

from __future__ import annotations


def instruction_problem(text: str, max_bytes: int) -> str:
    """Why ``text`` is not acceptable as a goal, naming the limit and the value; "" when it is.

    Refused: empty or whitespace-only text, text over ``max_bytes`` UTF-8 bytes, text with a
    NUL character (C-string layers below would silently cut it there), and text with U+FFFD, the
    replacement character rclpy decodes invalid UTF-8 bytes of a ROS string into (the bytes the
    sender meant are lost; a person does not type it).
    """
    if not text.strip():
        return "empty instruction" if not text else f"whitespace-only instruction ({len(text)} characters)"
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        return f"instruction is {size} bytes, over max_instruction_bytes={max_bytes}"
    if "\0" in text:
        return f"instruction has a NUL character at index {text.index(chr(0))}"
    if "\ufffd" in text:
        return f"instruction is not valid UTF-8 (undecodable bytes at index {text.index(chr(0xFFFD))})"
    return ""


def preview(text: str, limit: int = 80) -> str:
    """The instruction for a log line: repr, cut to ``limit`` characters with the full size said."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"
