"""Sokoban: seeded solvable puzzles (a built-in task) and their verifier (an environment).

Board text (the standard symbols; row 1 is the top, every board is walled all round)::

    #  wall     (space) floor   .  goal
    $  box      *  box on goal  @  player   +  player on goal

Generation (:func:`generate_sokoban_problems`): a room of ``board_size`` x ``board_size`` cells
(the outer ring is wall) with ``inner_walls`` extra wall cells (the floor stays connected); boxes
start on goals (a solved state) and the player walks backwards, pulling boxes, so every board is
solvable by construction. A breadth-first solver then finds the optimal solution length (in
moves), which must lie in ``[min_solution_length, max_solution_length]``. A board goes to the
``validation`` split when the first byte of the SHA-256 of its text is < 32 (about 1 in 8), else
to ``train``: the splits never share a board.

Answers (:func:`parse_moves`): the LAST ``<answer>...</answer>`` block, else the first non-empty
line after the LAST ``answer:`` (any case). Moves are separated by spaces, commas, semicolons,
``->``, ``\u2192`` or ``|``; each is ``up``/``down``/``left``/``right`` (any case) or a run of the letters
``U D L R`` (any case, so ``"UURDL"`` is five moves). Brackets, quotes, ``*``, ``.`` and ``!``
around a move are ignored. Anything else is a parse failure (reward 0, counted by reason in the metrics).

Simulation (:func:`play`): a move into a wall, or into a box whose next cell is a wall or another
box, leaves the player where it is (counted as blocked). The game ends as soon as every box is on a
goal; later moves are ignored. Reward: 1.0 when solved, else 0.0 (``reward: solved``), or the
fraction of boxes on goals when play ends (``reward: fraction_on_goal``).

Pure Python, standard library only (imported by the data loaders and the driver).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import deque
from dataclasses import dataclass

from nemo_distill.data.records import ProblemRecord
from nemo_distill.environments.registry import EnvironmentResult

WALL, FLOOR, GOAL, BOX, BOX_ON_GOAL, PLAYER, PLAYER_ON_GOAL = "#", " ", ".", "$", "*", "@", "+"
MOVE_LETTERS = ("U", "D", "L", "R")
_MOVE_WORDS = {"up": "U", "down": "D", "left": "L", "right": "R"}
_STEPS = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}
SPLITS = ("train", "validation")
PARSE_FAILURE_REASONS = ("no_answer_block", "empty_answer", "illegal_token")
DEFAULT_MAX_SOLVER_STATES = 200_000  # BFS budget per board; larger boards/more boxes need more

PROMPT_TEMPLATE = """Solve this Sokoban puzzle: push every box onto a goal.

Legend: '#' wall, ' ' floor, '.' goal, '$' box, '*' box on a goal, '@' you, '+' you standing on a goal.
Moves: U (up), D (down), L (left), R (right); the words up, down, left, right also work. Walking into a box pushes it one cell if the cell behind it is free; you cannot pull boxes or push two at once, and walls stop you.

Board (row 1 is the top):
{board}

Give your whole move sequence inside answer tags, for example <answer>R R U L</answer>."""


@dataclass(frozen=True)
class Board:
    """A Sokoban state. Cells are flat indices ``row * width + col`` (row 0 is the top)."""

    width: int
    height: int
    walls: frozenset[int]
    goals: frozenset[int]
    boxes: frozenset[int]
    player: int

    @classmethod
    def parse(cls, text: str) -> Board:
        """A board from its text (rows may be ragged: short rows are padded with floor).

        Raises ``ValueError`` naming the problem when the text is not a valid board.
        """
        rows = [row for row in text.strip("\n").split("\n")]
        if not rows or not any(row.strip() for row in rows):
            raise ValueError("sokoban board text is empty")
        width = max(len(row) for row in rows)
        walls, goals, boxes, players = set(), set(), set(), []
        for r, row in enumerate(rows):
            for c, symbol in enumerate(row.ljust(width)):
                cell = r * width + c
                if symbol == WALL:
                    walls.add(cell)
                elif symbol in (GOAL, BOX_ON_GOAL, PLAYER_ON_GOAL):
                    goals.add(cell)
                elif symbol not in (FLOOR, BOX, PLAYER):
                    raise ValueError(f"sokoban board row {r + 1} has an unknown symbol {symbol!r}; allowed: '#', ' ', '.', '$', '*', '@', '+'")
                if symbol in (BOX, BOX_ON_GOAL):
                    boxes.add(cell)
                if symbol in (PLAYER, PLAYER_ON_GOAL):
                    players.append(cell)
        if len(players) != 1:
            raise ValueError(f"sokoban board must have exactly one player ('@' or '+'), found {len(players)}")
        if not boxes or len(boxes) != len(goals):
            raise ValueError(f"sokoban board must have as many boxes as goals (at least one): {len(boxes)} boxes, {len(goals)} goals")
        return cls(width, len(rows), frozenset(walls), frozenset(goals), frozenset(boxes), players[0])

    def render(self) -> str:
        """The board's text, rows joined by ``"\\n"`` (the canonical form: ``parse(render())`` is ``self``)."""
        lines = []
        for r in range(self.height):
            row = []
            for cell in range(r * self.width, (r + 1) * self.width):
                on_goal = cell in self.goals
                if cell in self.walls:
                    row.append(WALL)
                elif cell == self.player:
                    row.append(PLAYER_ON_GOAL if on_goal else PLAYER)
                elif cell in self.boxes:
                    row.append(BOX_ON_GOAL if on_goal else BOX)
                else:
                    row.append(GOAL if on_goal else FLOOR)
            lines.append("".join(row))
        return "\n".join(lines)

    def is_solved(self) -> bool:
        return self.boxes == self.goals

    def boxes_on_goal_fraction(self) -> float:
        return len(self.boxes & self.goals) / len(self.goals)

    def offset(self, move: str) -> int:
        """The flat-index step of ``move`` (one of ``U D L R``)."""
        dr, dc = _STEPS[move]
        return dr * self.width + dc

    def _blocked(self, cell: int) -> bool:
        # Outside the grid counts as wall, so a board without an outer wall cannot be left.
        return cell in self.walls or not (0 <= cell < self.width * self.height)

    def step(self, move: str) -> Board | None:
        """The board after ``move``, or ``None`` when the move is blocked (wall, or an unpushable box)."""
        delta = self.offset(move)
        target = self.player + delta
        if self._blocked(target) or abs(target % self.width - self.player % self.width) > 1:
            return None
        boxes = self.boxes
        if target in boxes:
            behind = target + delta
            if self._blocked(behind) or behind in boxes or abs(behind % self.width - target % self.width) > 1:
                return None
            boxes = (boxes - {target}) | {behind}
        return Board(self.width, self.height, self.walls, self.goals, boxes, target)


@dataclass(frozen=True)
class PlayResult:
    """The outcome of playing a move sequence from a start board."""

    solved: bool  # every box reached a goal (play stops there)
    boxes_on_goal_fraction: float  # when play ended; 1.0 when solved
    moves_played: int  # moves consumed before the win or the end of the sequence
    blocked_moves: int  # of those, moves that changed nothing (wall or unpushable box)


def play(board: Board, moves: list[str]) -> PlayResult:
    """Play ``moves`` (letters ``U D L R``) from ``board``; see the module docstring for the rules."""
    blocked = 0
    for number, move in enumerate(moves, start=1):
        after = board.step(move)
        if after is None:
            blocked += 1
            continue
        board = after
        if board.is_solved():
            return PlayResult(True, 1.0, number, blocked)
    return PlayResult(board.is_solved(), board.boxes_on_goal_fraction(), len(moves), blocked)


def _live_cells(board: Board) -> frozenset[int]:
    """Cells from which a lone box can still be pushed onto some goal (found by pulling boxes away
    from the goals). A push onto any other cell can never be undone, so the solver skips it."""
    floor = {cell for cell in range(board.width * board.height) if not board._blocked(cell)}
    live, stack = set(board.goals), list(board.goals)
    while stack:
        box = stack.pop()
        for delta in (-board.width, board.width, -1, 1):
            # the box came from ``box - delta``, pushed by a player standing at ``box - 2 * delta``
            origin, player = box - delta, box - 2 * delta
            if origin in floor and player in floor and origin not in live:
                live.add(origin)
                stack.append(origin)
    return frozenset(live)


def solve(board: Board, *, max_states: int = DEFAULT_MAX_SOLVER_STATES) -> list[str] | None:
    """An optimal (fewest moves) solution found by breadth-first search over (player, boxes).

    Returns ``[]`` for a solved board, ``None`` when there is no solution or the search visits more
    than ``max_states`` states (then the board counts as too hard, not as proven unsolvable).
    Pushes onto dead cells (see :func:`_live_cells`) are pruned; that never removes a solution.
    """
    if board.is_solved():
        return []
    live = _live_cells(board)
    deltas = [(move, board.offset(move)) for move in MOVE_LETTERS]
    # Boards are walled all round in practice; the column check keeps L/R from wrapping rows otherwise.
    width, size = board.width, board.width * board.height
    start = (board.player, board.boxes)
    parents: dict[tuple[int, frozenset[int]], tuple[tuple[int, frozenset[int]], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        player, boxes = state
        for move, delta in deltas:
            target = player + delta
            if not 0 <= target < size or target in board.walls or (move in "LR" and target // width != player // width):
                continue
            if target in boxes:
                behind = target + delta
                if behind not in live or behind in boxes or (move in "LR" and behind // width != target // width):
                    continue
                key = (target, (boxes - {target}) | {behind})
            else:
                key = (target, boxes)
            if key in parents:
                continue
            parents[key] = (state, move)
            if key[1] == board.goals:
                path = []
                while parents[key] is not None:
                    key, step = parents[key]
                    path.append(step)
                return path[::-1]
            if len(parents) > max_states:
                return None
            queue.append(key)
    return None


def _connected(cells: set[int], width: int) -> bool:
    start = next(iter(cells))
    seen, stack = {start}, [start]
    while stack:
        cell = stack.pop()
        for step in (-width, width, -1, 1):
            neighbour = cell + step
            if neighbour in cells and neighbour not in seen:
                seen.add(neighbour)
                stack.append(neighbour)
    return len(seen) == len(cells)


def _reverse_walk(rng: random.Random, board: Board, num_steps: int) -> Board:
    """Play backwards from a solved board: the player walks and, with probability 0.75, pulls the
    box behind it. Each reverse step undoes a legal forward move, so the result stays solvable."""
    boxes, player = set(board.boxes), board.player
    for _ in range(num_steps):
        move = rng.choice(MOVE_LETTERS)
        delta = board.offset(move)
        target = player + delta
        if target in board.walls or target in boxes:
            continue
        behind = player - delta
        if behind in boxes and rng.random() < 0.75:
            boxes.remove(behind)
            boxes.add(player)
        player = target
    return Board(board.width, board.height, board.walls, board.goals, frozenset(boxes), player)


def generate_board(rng: random.Random, *, board_size: int = 6, num_boxes: int = 1, inner_walls: int = 0,
                   min_solution_length: int = 1, max_solution_length: int | None = None,
                   max_attempts: int = 2000) -> tuple[Board, list[str]]:
    """One solvable, unsolved board and an optimal solution, drawn with ``rng`` (knobs: module docstring)."""
    interior = [r * board_size + c for r in range(1, board_size - 1) for c in range(1, board_size - 1)]
    border = frozenset(range(board_size * board_size)) - frozenset(interior)
    for _ in range(max_attempts):
        extra_walls = set(rng.sample(interior, inner_walls))
        floor = [cell for cell in interior if cell not in extra_walls]
        if not _connected(set(floor), board_size):
            continue
        goals = frozenset(rng.sample(floor, num_boxes))
        player = rng.choice([cell for cell in floor if cell not in goals])
        solved = Board(board_size, board_size, border | extra_walls, goals, goals, player)
        longest = max_solution_length or 4 * board_size * num_boxes
        start = _reverse_walk(rng, solved, rng.randint(max(min_solution_length, 2), 3 * longest))
        if start.is_solved():
            continue
        solution = solve(start)
        if solution is None or len(solution) < min_solution_length:
            continue
        if max_solution_length is not None and len(solution) > max_solution_length:
            continue
        return start, solution
    raise ValueError(
        f"no sokoban board with board_size={board_size}, num_boxes={num_boxes}, inner_walls={inner_walls} and a "
        f"solution of {min_solution_length}..{max_solution_length} moves in {max_attempts} attempts; widen the "
        "solution-length range or enlarge the board"
    )


def split_of(board_text: str) -> str:
    # A hash of the board, not the RNG stream, decides the split, so a board drawn by both
    # streams still lands in only one of them.
    return "validation" if hashlib.sha256(board_text.encode()).digest()[0] < 32 else "train"


def generate_sokoban_problems(num_samples: int, *, split: str, seed: int = 0, board_size: int = 6, num_boxes: int = 1,
                              inner_walls: int = 0, min_solution_length: int = 1,
                              max_solution_length: int | None = None) -> list[ProblemRecord]:
    """``num_samples`` distinct boards of ``split`` ("train" or "validation"), deterministic in ``seed``.

    Each record: ``problem`` = :data:`PROMPT_TEMPLATE` with the board, ``answer`` = the board text
    (what :class:`SokobanEnvironment` replays moves on), ``metadata`` = ``optimal_solution_length``
    (moves), ``num_boxes``, ``board_size``. Knobs: ``board_size`` >= 4 (cells per side, walls
    included), ``num_boxes`` >= 1, ``inner_walls`` >= 0 (extra wall cells inside the room), optimal
    solution length within ``[min_solution_length, max_solution_length]`` (None: no upper bound).
    """
    if split not in SPLITS:
        raise ValueError(f"sokoban split '{split}' is not one of {SPLITS}")
    if num_samples < 0:
        raise ValueError(f"sokoban num_samples must be >= 0, got {num_samples}")
    if board_size < 4:
        raise ValueError(f"sokoban board_size must be >= 4 (the outer ring is wall), got {board_size}")
    free_cells = (board_size - 2) ** 2 - inner_walls
    if inner_walls < 0 or num_boxes < 1 or free_cells < num_boxes + 2:
        raise ValueError(
            f"sokoban needs num_boxes >= 1, inner_walls >= 0 and at least num_boxes + 2 free cells; board_size={board_size} "
            f"with inner_walls={inner_walls} leaves {free_cells} for num_boxes={num_boxes}"
        )
    if min_solution_length < 1 or (max_solution_length is not None and max_solution_length < min_solution_length):
        raise ValueError(
            f"sokoban needs 1 <= min_solution_length <= max_solution_length, got {min_solution_length} and {max_solution_length}"
        )
    rng = random.Random(f"sokoban-{seed}-{split}")
    records: list[ProblemRecord] = []
    seen: set[str] = set()
    attempts = 0
    while len(records) < num_samples:
        attempts += 1
        if attempts > 50 * max(num_samples, 1) + 100:
            raise ValueError(
                f"cannot draw {num_samples} distinct {split} sokoban boards with board_size={board_size}, num_boxes={num_boxes}, "
                f"inner_walls={inner_walls}; enlarge the board, add boxes or lower num_samples"
            )
        board, solution = generate_board(rng, board_size=board_size, num_boxes=num_boxes, inner_walls=inner_walls,
                                         min_solution_length=min_solution_length, max_solution_length=max_solution_length)
        text = board.render()
        if text in seen or split_of(text) != split:
            continue
        seen.add(text)
        records.append(ProblemRecord(
            problem=PROMPT_TEMPLATE.format(board=text), answer=text, record_id=f"sokoban-{split}-{len(records)}",
            metadata={"optimal_solution_length": len(solution), "num_boxes": num_boxes, "board_size": board_size},
        ))
    return records


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ANSWER_COLON = re.compile(r"answer\s*:", re.IGNORECASE)
_SEPARATORS = re.compile(r"(?:\s|,|;|->|\u2192|\|)+")
_LETTER_RUN = re.compile(r"[udlr]+")


def extract_answer_block(text: str) -> str | None:
    """The text of the last ``<answer>`` block, else the first non-empty line after the last ``answer:``."""
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return tags[-1].strip()
    colons = list(_ANSWER_COLON.finditer(text))
    if not colons:
        return None
    for line in text[colons[-1].end():].split("\n"):
        if line.strip():
            return line.strip()
    return ""


def parse_moves(text: str) -> tuple[list[str] | None, str | None]:
    """``(moves, None)`` with moves as letters ``U D L R``, or ``(None, reason)`` with a reason from
    :data:`PARSE_FAILURE_REASONS` (format: module docstring)."""
    block = extract_answer_block(text)
    if block is None:
        return None, "no_answer_block"
    moves: list[str] = []
    for token in _SEPARATORS.split(block):
        token = token.strip("[](){}'\"`*.!").lower()
        if not token:
            continue
        if token in _MOVE_WORDS:
            moves.append(_MOVE_WORDS[token])
        elif _LETTER_RUN.fullmatch(token):
            moves.extend(letter.upper() for letter in token)
        else:
            return None, "illegal_token"
    if not moves:
        return None, "empty_answer"
    return moves, None


class SokobanEnvironment:
    """Replays each response's moves on its board (the gold answer is the board text)."""

    def __init__(self, *, reward: str = "solved"):
        if reward not in ("solved", "fraction_on_goal"):
            raise ValueError(f"sokoban reward must be 'solved' or 'fraction_on_goal', got {reward!r}")
        self.reward = reward

    def evaluate(self, responses: list[str], gold_answers: list[str | None]) -> EnvironmentResult:
        """Rewards in [0, 1] and ``sokoban/*`` metrics: rates and means over the batch, per-reason
        parse-failure counts, and move statistics over the parsed responses."""
        if len(responses) != len(gold_answers):
            raise ValueError(f"{len(responses)} responses but {len(gold_answers)} gold boards; they must pair up one to one")
        rewards: list[float] = []
        failures = dict.fromkeys(PARSE_FAILURE_REASONS, 0)
        solved = moves_played = blocked = 0
        on_goal: list[float] = []
        for index, (response, gold) in enumerate(zip(responses, gold_answers)):
            if gold is None:
                raise ValueError(f"sample {index} has no gold board; sokoban needs the board text as the answer")
            board = Board.parse(gold)
            moves, reason = parse_moves(response)
            if moves is None:
                failures[reason] += 1
                rewards.append(0.0)
                continue
            result = play(board, moves)
            solved += result.solved
            moves_played += result.moves_played
            blocked += result.blocked_moves
            on_goal.append(result.boxes_on_goal_fraction)
            rewards.append(float(result.solved) if self.reward == "solved" else result.boxes_on_goal_fraction)
        count, parsed = max(len(responses), 1), max(len(on_goal), 1)
        metrics = {
            "sokoban/solved_rate": solved / count,
            "sokoban/parse_failure_rate": sum(failures.values()) / count,
            **{f"sokoban/parse_failure/{reason}": float(n) for reason, n in failures.items()},
            "sokoban/boxes_on_goal_fraction": sum(on_goal) / parsed,
            "sokoban/mean_moves_played": moves_played / parsed,
            "sokoban/blocked_move_rate": blocked / max(moves_played, 1),
        }
        return EnvironmentResult(rewards=rewards, metrics=metrics)

    def score(self, responses: list[str], gold_answers: list[str | None]) -> list[float]:
        """One reward per response: ``evaluate(...).rewards``."""
        return self.evaluate(responses, gold_answers).rewards
