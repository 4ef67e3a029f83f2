*** Settings ***
Documentation       The cqtf firmware on an emulated STM32F4 under Renode: the ELFs of the netduinoplus2
...                 environment (QEMU runs the same ones), on Renode's own STM32F4 model.
...                 1. The on-target kernel tests (test/test_kernels) report every case passed.
...                 2. The model firmware answers `cqtf validate` through a socket terminal, and every output
...                 byte over the whole test set equals the host simulation.
...
...                 Run from the repository root, after building (docs/hil.md):
...                 renode-test renode/cqtf_stm32f4.robot [--variable NAME:VALUE ...]
...                 renode-test starts Renode and provides its keywords (Execute Command, Create Terminal Tester,
...                 Start Emulation, Wait For Line On Uart) and the default Setup/Teardown of each test.
Library             OperatingSystem
Library             Process
Test Timeout        25 minutes

*** Variables ***
${PLATFORM_SCRIPT}      ${CURDIR}/cqtf_stm32f4.resc
${UART}                 sysbus.usart1
${ENV}                  netduinoplus2
${KERNEL_TESTS_ELF}     ${CURDIR}/../.cqtf-build/renode-tests/${ENV}/firmware.elf
${MODEL_DIR}            ${CURDIR}/../runs/renode
${FIRMWARE_ELF}         ${MODEL_DIR}/firmware/${ENV}/pio/${ENV}/firmware.elf
${PYTHON}               python3
${LINK_PORT}            3456
${UART_TIMEOUT}         120
${VALIDATE_TIMEOUT}     20 minutes

*** Keywords ***
Create Machine Running
    [Arguments]    ${elf}
    File Should Exist    ${elf}    build it first (docs/hil.md): ${elf}
    Execute Command    set bin @${elf}
    Execute Command    include @${PLATFORM_SCRIPT}

*** Test Cases ***
Kernel Tests Should Pass On The STM32F4
    [Documentation]    Golden vectors from the host reference, checked by the firmware's own engine.
    Create Machine Running    ${KERNEL_TESTS_ELF}
    Create Terminal Tester    ${UART}    timeout=${UART_TIMEOUT}
    Start Emulation
    Wait For Line On Uart    cqtf-test: begin kernels
    ${end}=    Wait For Line On Uart    cqtf-test: end (\\d+) passed (\\d+) failed    treatAsRegex=true
    Should Be Equal As Integers    ${end.groups[1]}    0    msg=kernel cases failed: see the cqtf-test FAIL lines in the log
    Should Be True    ${end.groups[0]} > 0    msg=no kernel case ran

Model Firmware Should Be Bit Exact With The Host
    [Documentation]    `cqtf validate` streams the test set through the UART socket; exit status 0 means every
    ...                output byte of every sample equals the host simulation (3 would name the mismatches).
    Create Machine Running    ${FIRMWARE_ELF}
    Execute Command    emulation CreateServerSocketTerminal ${LINK_PORT} "cqtf-link" false
    Execute Command    connector Connect ${UART} cqtf-link
    Start Emulation
    ${result}=    Run Process    ${PYTHON}    -m    cqtf.cli    validate    --port    socket://127.0.0.1:${LINK_PORT}
    ...    --model    ${MODEL_DIR}    --out    ${OUTPUT DIR}/cqtf-renode-report    --timeout    30
    ...    timeout=${VALIDATE_TIMEOUT}    on_timeout=kill    stderr=STDOUT
    Log    ${result.stdout}
    Should Be Equal As Integers    ${result.rc}    0    msg=cqtf validate failed:\n${result.stdout}
    Should Contain    ${result.stdout}    mismatched 0
