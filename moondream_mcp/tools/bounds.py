"""Upper bounds on the free values tools take, in one place. Each is written into the tool's input
schema, so the model sees it, and enforced when the arguments are validated."""

from typing import Annotated

from pydantic import Field

OBJECT_CHARS = 200  # what to look for: a few words
TEXT_CHARS = 4_000  # a question, an answer, a reasoning text
NAME_CHARS = 256  # ids, names, model strings, cursors
PATH_CHARS = 4_096  # a file path or a glob (PATH_MAX on Linux)
MAX_OBJECTS = 1_000  # boxes one detect call may return (the API's default is 50)
MAX_TOKENS = 8_192
MAX_TEMPERATURE = 2.0
POINTS = 100  # points or boxes given as labels or hints in one call
STEP = 1_000_000  # a finetune's step number
EXAMPLES = 100_000  # images or examples in one call
TURNS = 100  # earlier turns of a conversation
LINE = 10_000_000  # a line number in a dataset file
SECONDS = 1_000_000  # a time into a video
FRAMES = 1_000_000  # frames of a video

# A normalized coordinate. Only its maximum is written into the schema (the instructions say 0-1, and a minimum
# on every coordinate would cost context in every conversation); the tools taking one check the whole range.
Coordinate = Annotated[float, Field(le=1)]

# A list of image references (each bounded by MOONDREAM_MCP_MAX_FILE_BYTES when loaded), or one directory or glob.
Images = Annotated[list[str], Field(max_length=EXAMPLES)] | Annotated[str, Field(max_length=PATH_CHARS)]
