"""Stand-ins for the Renode keywords renode/cqtf_stm32f4.robot uses, with Renode's own signatures.

renode-test serves these from Renode (src/Renode/RobotFrameworkEngine: RenodeKeywords.cs,
UartKeywords.cs, renode-keywords.robot). Here they only let Robot Framework's dry run check the suite:
keyword names, argument counts and named arguments. They emulate nothing.
"""


def setup():
    """renode-test's default suite setup."""


def teardown():
    """renode-test's default suite teardown."""


def reset_emulation():
    """renode-test's default test setup."""


def test_teardown():
    """renode-test's default test teardown."""


def execute_command(command, machine=None):
    return ""


def execute_script(path):
    return ""


def start_emulation():
    pass


def create_terminal_tester(uart, timeout=None, machine=None, endLineOption=None, defaultPauseEmulation=None,
                           defaultWaitForEcho=None, defaultMatchNextLine=None, binaryMode=False):
    return 1


def wait_for_line_on_uart(content, timeout=None, testerId=None, treatAsRegex=False, includeUnfinishedLine=False,
                          pauseEmulation=None, matchNextLine=None):
    return {"line": content, "timestamp": 0.0, "groups": ["1", "0"]}
