"""Sokoban: board text, simulator, BFS solver, generator (solvable, seeded, split-disjoint), answer
parsing and the environment's rewards and metrics, all against hand-worked boards."""

from __future__ import annotations

import time

import pytest

from nemo_distill.environments.sokoban import (
    PARSE_FAILURE_REASONS,
    Board,
    SokobanEnvironment,
    extract_answer_block,
    generate_sokoban_problems,
    parse_moves,
    play,
    solve,
    split_of,
)

# One box two cells left of its goal: the optimal solution is R R (player pushes twice).
LINE = "######\n#@$ .#\n######"
# Two boxes: '*' already on a goal, '$' one push (R) from the other goal.
TWO_BOXES = "#######\n#*@$. #\n#     #\n#######"


def test_parse_and_render_round_trip_every_symbol():
    text = "#######\n#.$* $#\n#$ +. #\n#######"
    board = Board.parse(text)
    assert board.render() == text
    assert (board.width, board.height) == (7, 4)
    assert board.player == 2 * 7 + 3  # row 2, column 3 ('+')
    assert board.goals == {1 * 7 + 1, 1 * 7 + 3, 2 * 7 + 3, 2 * 7 + 4}
    assert board.boxes == {1 * 7 + 2, 1 * 7 + 3, 1 * 7 + 5, 2 * 7 + 1}
    assert Board.parse(board.render()) == board
    with pytest.raises(ValueError, match="exactly one player"):
        Board.parse("#######\n#.$*@ #\n#  +  #\n#######")  # '@' and '+' are two players


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("#####\n#$. #\n#####", "exactly one player"),
        ("#####\n#@$ #\n#####", "as many boxes as goals"),
        ("#####\n#@$x#\n#####", "unknown symbol 'x'"),
    ],
)
def test_parse_rejects_invalid_boards(text, message):
    with pytest.raises(ValueError, match=message):
        Board.parse(text)


def test_ragged_rows_are_padded_with_floor():
    board = Board.parse("####\n#@$.#\n#####")
    assert board.width == 5 and board.render() == "#### \n#@$.#\n#####"


def test_walk_push_and_win():
    board = Board.parse(LINE)
    after = board.step("R")  # push the box from column 2 to 3
    assert after.player == 1 * 6 + 2 and after.boxes == {1 * 6 + 3} and not after.is_solved()
    solved = after.step("R")
    assert solved.is_solved() and solved.render() == "######\n#  @*#\n######"
    assert play(board, ["R", "R"]) == play(board, list("RR"))
    result = play(board, ["R", "R"])
    assert (result.solved, result.boxes_on_goal_fraction, result.moves_played, result.blocked_moves) == (True, 1.0, 2, 0)


def test_walls_and_box_into_wall_block_the_move():
    board = Board.parse(LINE)
    assert board.step("U") is None and board.step("D") is None and board.step("L") is None
    at_goal = Board.parse("######\n#  @$#\n#  . #\n######")
    assert at_goal.step("R") is None  # the box would go into the wall
    result = play(board, ["U", "L", "R"])
    assert (result.solved, result.moves_played, result.blocked_moves) == (False, 3, 2)


def test_box_cannot_push_box():
    board = Board.parse("#######\n#@$$..#\n#######")
    assert board.step("R") is None
    assert play(board, ["R", "R"]).blocked_moves == 2


def test_play_stops_at_the_win_and_ignores_later_moves():
    result = play(Board.parse(LINE), ["R", "R", "L", "L", "U"])
    assert (result.solved, result.moves_played, result.blocked_moves) == (True, 2, 0)


def test_fraction_on_goal_when_unsolved():
    board = Board.parse(TWO_BOXES)
    assert board.boxes_on_goal_fraction() == 0.5
    result = play(board, ["D"])
    assert (result.solved, result.boxes_on_goal_fraction) == (False, 0.5)
    assert play(board, ["R"]).solved


def test_solver_is_optimal_and_detects_dead_boards():
    assert solve(Board.parse(LINE)) == ["R", "R"]
    assert solve(Board.parse(TWO_BOXES)) == ["R"]
    assert solve(Board.parse("#####\n#@ *#\n#####")) == []
    # Box in a corner away from the goal: unsolvable.
    assert solve(Board.parse("#####\n#$ @#\n#  .#\n#####")) is None
    # The player must walk round to the box's left before pushing right: L U R (hand-counted).
    board = Board.parse("######\n#  $.#\n#  @ #\n######")
    solution = solve(board)
    assert solution == ["L", "U", "R"] and play(board, solution).solved


GENERATOR_CASES = [
    dict(board_size=5),
    dict(board_size=6),
    dict(board_size=6, num_boxes=2),
    dict(board_size=7, num_boxes=2, inner_walls=3),
    dict(board_size=7, num_boxes=1, min_solution_length=6, max_solution_length=9),
]


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("knobs", GENERATOR_CASES, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()))
def test_every_generated_board_is_solvable_and_matches_its_metadata(seed, knobs):
    records = generate_sokoban_problems(24, split="train", seed=seed, **knobs)
    assert len(records) == 24 and len({r.answer for r in records}) == 24
    for record in records:
        board = Board.parse(record.answer)
        assert board.render() == record.answer and record.answer in record.problem
        assert (board.width, len(board.boxes)) == (knobs["board_size"], knobs.get("num_boxes", 1))
        assert len(board.walls) >= 4 * knobs["board_size"] - 4 + knobs.get("inner_walls", 0)
        assert not board.is_solved()
        solution = solve(board)
        assert solution is not None and play(board, solution).solved
        assert len(solution) == record.metadata["optimal_solution_length"]
        assert knobs.get("min_solution_length", 1) <= len(solution) <= knobs.get("max_solution_length", 10**9)
        assert split_of(record.answer) == "train"


def test_prompt_documents_legend_moves_and_answer_format():
    problem = generate_sokoban_problems(1, split="train", seed=0)[0].problem
    for needle in ("'#' wall", "'.' goal", "'$' box", "'*' box on a goal", "'@' you", "'+' you standing on a goal",
                   "U (up)", "D (down)", "L (left)", "R (right)", "<answer>"):
        assert needle in problem


def test_generation_is_deterministic_in_seed():
    first = generate_sokoban_problems(16, split="train", seed=3, num_boxes=2)
    assert first == generate_sokoban_problems(16, split="train", seed=3, num_boxes=2)
    assert [r.answer for r in first] != [r.answer for r in generate_sokoban_problems(16, split="train", seed=4, num_boxes=2)]
    assert [r.record_id for r in first[:2]] == ["sokoban-train-0", "sokoban-train-1"]


def test_train_and_validation_never_share_a_board():
    train = {r.answer for r in generate_sokoban_problems(300, split="train", seed=0)}
    validation = {r.answer for r in generate_sokoban_problems(40, split="validation", seed=0)}
    assert len(train) == 300 and len(validation) == 40 and not train & validation
    assert all(split_of(board) == "validation" for board in validation)


@pytest.mark.parametrize(
    "knobs, message",
    [
        (dict(board_size=3), "board_size must be >= 4"),
        (dict(board_size=4, num_boxes=3), "free cells"),
        (dict(num_boxes=0), "num_boxes >= 1"),
        (dict(min_solution_length=0), "min_solution_length"),
        (dict(min_solution_length=5, max_solution_length=4), "min_solution_length <= max_solution_length"),
        (dict(split="test"), "not one of"),
    ],
)
def test_bad_knobs_name_the_knob(knobs, message):
    kwargs = {"split": "train", "seed": 0, **knobs}
    with pytest.raises(ValueError, match=message):
        generate_sokoban_problems(2, **kwargs)


def test_impossible_request_fails_with_a_fix():
    with pytest.raises(ValueError, match="lower num_samples"):
        generate_sokoban_problems(100, split="validation", seed=0, board_size=5)


def test_512_easy_boards_take_under_two_seconds():
    start = time.perf_counter()
    generate_sokoban_problems(512, split="train", seed=0)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "text, moves",
    [
        ("<answer>U D L R</answer>", list("UDLR")),
        ("<answer>up, Down; left -> RIGHT</answer>", list("UDLR")),
        ("<ANSWER>\nuurDL\n</ANSWER>", list("UURDL")),
        ("<answer>U</answer> on second thought <answer>D D</answer>", ["D", "D"]),
        ("I think. Answer: R R", ["R", "R"]),
        ("answer: U\nFinal answer:\n\n  [L, R].\nthanks", ["L", "R"]),
        ("<answer>U | D \u2192 L</answer>", list("UDL")),
        ("Answer: U\n<answer>R</answer>", ["R"]),  # a tag block wins over 'answer:'
    ],
)
def test_parse_moves_accepts_the_documented_formats(text, moves):
    assert parse_moves(text) == (moves, None)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("I would push the box up.", "no_answer_block"),
        ("", "no_answer_block"),
        ("<answer>U D", "no_answer_block"),  # never closed: truncated
        ("<answer> </answer>", "empty_answer"),
        ("<answer>, ; .</answer>", "empty_answer"),
        ("Answer:", "empty_answer"),
        ("<answer>U X</answer>", "illegal_token"),
        ("<answer>up jump</answer>", "illegal_token"),
        ("<answer>move the box</answer>", "illegal_token"),
    ],
)
def test_malformed_answers_give_a_reason(text, reason):
    assert parse_moves(text) == (None, reason)
    assert reason in PARSE_FAILURE_REASONS


def test_extract_answer_block_takes_the_last_block():
    assert extract_answer_block("<answer>a</answer><answer>b</answer>") == "b"
    assert extract_answer_block("Answer: x\nanswer: y") == "y"
    assert extract_answer_block("nothing") is None


def test_environment_rewards_and_metrics_by_hand():
    responses = [
        "<answer>R R</answer>",          # solved
        "<answer>R L L</answer>",        # pushed once, never solved (L is blocked once)
        "<answer>R R R U</answer>",      # solved at move 2; later moves ignored
        "no answer here",                # parse failure
        "<answer>jump</answer>",         # parse failure
    ]
    env = SokobanEnvironment()
    result = env.evaluate(responses, [LINE] * 5)
    assert result.rewards == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert env.score(responses, [LINE] * 5) == result.rewards
    metrics = result.metrics
    assert metrics["sokoban/solved_rate"] == pytest.approx(2 / 5)
    assert metrics["sokoban/parse_failure_rate"] == pytest.approx(2 / 5)
    assert metrics["sokoban/parse_failure/no_answer_block"] == 1.0
    assert metrics["sokoban/parse_failure/illegal_token"] == 1.0
    assert metrics["sokoban/parse_failure/empty_answer"] == 0.0
    assert metrics["sokoban/boxes_on_goal_fraction"] == pytest.approx(2 / 3)
    assert metrics["sokoban/mean_moves_played"] == pytest.approx((2 + 3 + 2) / 3)
    # R L L from '#@$ .#': R pushes, L walks back to column 1, L hits the wall: 1 blocked of 7 played.
    assert metrics["sokoban/blocked_move_rate"] == pytest.approx(1 / 7)


def test_fraction_on_goal_reward():
    env = SokobanEnvironment(reward="fraction_on_goal")
    assert env.score(["<answer>D</answer>", "<answer>R</answer>", "nothing"], [TWO_BOXES] * 3) == [0.5, 1.0, 0.0]


def test_environment_input_errors():
    with pytest.raises(ValueError, match="solved' or 'fraction_on_goal"):
        SokobanEnvironment(reward="partial")
    with pytest.raises(ValueError, match="pair up"):
        SokobanEnvironment().evaluate(["a"], [])
    with pytest.raises(ValueError, match="sample 0 has no gold board"):
        SokobanEnvironment().evaluate(["<answer>R</answer>"], [None])
    assert SokobanEnvironment().evaluate([], []).rewards == []
