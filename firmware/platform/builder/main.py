"""SCons build script of the cqtf-cortexm platform: bare-metal Cortex-M, system arm-none-eabi-gcc.

Produces $BUILD_DIR/firmware.elf, firmware.bin and firmware.map, prints the size, and has an
`upload` target that boots the ELF in QEMU with the board's UART on this terminal.

Board JSON keys read here:
  build.cpu                 -mcpu=<cpu> (always with -mthumb)
  build.fpu, build.float_abi  -mfpu=<fpu> -mfloat-abi=<float_abi> (omit fpu for soft float)
  qemu.machine              qemu-system-arm -M <machine>
  upload.maximum_size / maximum_ram_size  checked after linking (arm-none-eabi-size -B)
Every key can be overridden per environment with board_<key>, e.g. board_build.fpu.
The linker script is board_build.ldscript (relative paths are taken from the project dir).
"""

import os
import shlex
import shutil

from SCons.Script import (  # pylint: disable=import-error
    AlwaysBuild,
    Builder,
    COMMAND_LINE_TARGETS,
    Default,
    DefaultEnvironment,
)

env = DefaultEnvironment()
board = env.BoardConfig()

machine_flags = ["-mcpu=%s" % board.get("build.cpu"), "-mthumb"]
if board.get("build.fpu", ""):
    machine_flags += [
        "-mfloat-abi=%s" % board.get("build.float_abi", "hard"),
        "-mfpu=%s" % board.get("build.fpu"),
    ]

env.Replace(
    AR="arm-none-eabi-gcc-ar",
    AS="arm-none-eabi-gcc",
    CC="arm-none-eabi-gcc",
    CXX="arm-none-eabi-g++",
    LINK="$CC",
    GDB="arm-none-eabi-gdb",
    OBJCOPY="arm-none-eabi-objcopy",
    RANLIB="arm-none-eabi-gcc-ranlib",
    SIZETOOL="arm-none-eabi-size",
    ARFLAGS=["rc"],
    # Flash = text + data, RAM = data + bss: PlatformIO's defaults for `size -B`, which do not
    # depend on the section names of the project's linker script.
    SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    PROGSUFFIX=".elf",
    QEMU="qemu-system-arm",
    QEMU_MACHINE=board.get("qemu.machine", ""),
)

# A pre: extra script may choose another name.
if env.get("PROGNAME", "program") == "program":
    env.Replace(PROGNAME="firmware")

# .s files go through the C preprocessor too, with the same machine flags.
env.Replace(ASCOM="$ASPPCOM")
env.Append(
    ASFLAGS=machine_flags + ["-x", "assembler-with-cpp"],
    CCFLAGS=machine_flags,
    LINKFLAGS=["-Wl,-Map,${BUILD_DIR}/${PROGNAME}.map"],
)
# gcc drives the link: hand it the compile flags as well, so that driver options given in
# build_flags (-mcpu/-mfpu, --specs=nano.specs, -nostartfiles, ...) reach the link, where they
# choose the multilib, the C library and the start files. SCons' flag parser files such options
# under CCFLAGS only.
env.Replace(LINKCOM="$LINK -o $TARGET $LINKFLAGS $CCFLAGS $__RPATH $SOURCES $_LIBDIRFLAGS $_LIBFLAGS")

# Linker script: resolve a relative board_build.ldscript against the project dir.
if env.get("LDSCRIPT_PATH"):
    ldscript = env.subst("$LDSCRIPT_PATH")
    if not os.path.isabs(ldscript):
        ldscript = os.path.join(env.subst("$PROJECT_DIR"), ldscript)
    env.Replace(LDSCRIPT_PATH=ldscript)

env.Append(
    BUILDERS=dict(
        ElfToBin=Builder(
            action=env.VerboseAction(
                "$OBJCOPY -O binary $SOURCES $TARGET", "Building $TARGET"
            ),
            suffix=".bin",
        )
    )
)

#
# Targets
#

target_elf = None
if "nobuild" in COMMAND_LINE_TARGETS:
    target_elf = os.path.join("$BUILD_DIR", "${PROGNAME}.elf")
    target_bin = os.path.join("$BUILD_DIR", "${PROGNAME}.bin")
else:
    target_elf = env.BuildProgram()
    if env.get("LDSCRIPT_PATH"):
        env.Depends(target_elf, env.subst("$LDSCRIPT_PATH"))
    target_bin = env.ElfToBin(os.path.join("$BUILD_DIR", "${PROGNAME}"), target_elf)
    env.Depends(target_bin, "checkprogsize")

AlwaysBuild(env.Alias("nobuild", target_bin))
target_buildprog = env.Alias("buildprog", target_bin, target_bin)

target_size = env.Alias(
    "size", target_elf, env.VerboseAction("$SIZEPRINTCMD", "Calculating size $SOURCE")
)
AlwaysBuild(target_size)

# Upload = boot the ELF in QEMU. -nographic puts the first UART on this terminal
# (Ctrl-A X quits); semihosting lets the firmware end QEMU with an exit code.
# Extra QEMU options: `upload_flags` in platformio.ini (e.g. -icount shift=0), prepended
# to $UPLOADERFLAGS by PlatformIO.
upload_protocol = env.subst("$UPLOAD_PROTOCOL") or "qemu"
if env.get("UPLOAD_FLAGS"):
    # one ini line may hold several arguments ("-icount shift=0"): split them like a shell would
    _flags = env["UPLOAD_FLAGS"]
    _flags = [_flags] if isinstance(_flags, str) else list(_flags)
    env.Replace(UPLOAD_FLAGS=[arg for item in _flags for arg in shlex.split(env.subst(item))])
if upload_protocol == "qemu":
    if not env.subst("$QEMU_MACHINE"):
        print("Warning! Board has no `qemu.machine`: set board_qemu.machine in platformio.ini")
    env.Replace(
        UPLOADER="$QEMU",
        UPLOADERFLAGS=[
            "-M",
            "$QEMU_MACHINE",
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
        ],
        UPLOADCMD="$UPLOADER $UPLOADERFLAGS -kernel $SOURCE",
    )
    upload_actions = [env.VerboseAction("$UPLOADCMD", "Booting $SOURCE in QEMU ($QEMU_MACHINE)")]
elif upload_protocol in ("pyocd", "openocd"):
    # Real boards: flash the ELF with the board's debug probe; the tool must be on PATH.
    if upload_protocol == "pyocd":
        env.Replace(
            UPLOADER="pyocd",
            UPLOADERFLAGS=["flash", "--target", board.get("debug.pyocd_target", "")],
            UPLOADCMD="$UPLOADER $UPLOADERFLAGS $SOURCE",
        )
    else:
        env.Replace(
            UPLOADER="openocd",
            UPLOADERFLAGS=[
                "-f", "interface/stlink.cfg",
                "-f", "target/%s.cfg" % board.get("debug.openocd_target", ""),
            ],
            UPLOADCMD='$UPLOADER $UPLOADERFLAGS -c "program {$SOURCE} verify reset exit"',
        )

    def _check_uploader(target, source, env):  # pylint: disable=unused-argument
        if not shutil.which(env.subst("$UPLOADER")):
            print("Error: `%s` not found on PATH: install it (pip install pyocd, or apt-get install "
                  "openocd) to flash a real board" % env.subst("$UPLOADER"))
            return 1
        return None

    upload_actions = [
        env.VerboseAction(_check_uploader, "Looking for $UPLOADER"),
        env.VerboseAction("$UPLOADCMD", "Flashing $SOURCE with $UPLOADER"),
    ]
elif upload_protocol == "custom":
    upload_actions = [env.VerboseAction("$UPLOADCMD", "Uploading $SOURCE")]
else:

    def _unknown_protocol(target, source, env):  # pylint: disable=unused-argument
        print("Error: upload_protocol `%s` is not supported (qemu, pyocd, openocd or custom)"
              % upload_protocol)
        return 1

    upload_actions = [env.VerboseAction(_unknown_protocol, "Uploading $SOURCE")]

AlwaysBuild(env.Alias("upload", target_elf, upload_actions))

Default([target_buildprog, target_size])
