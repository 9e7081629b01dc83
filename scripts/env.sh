# Put this shell into the project's environment. Source it from the repository root:
#
#     . scripts/env.sh           # Jazzy runtime (default), or the sourced system ROS 2
#     . scripts/env.sh humble    # Humble runtime from the same wheel (as does an exported
#                                # ROS_DISTRO=humble; `ROS_DISTRO=humble . scripts/env.sh` does
#                                # not work in bash, which undoes such prefix assignments)
#
# What it does:
#   1. activates .venv (create it with `make venv`);
#   2. picks a ROS 2 runtime:
#      - a system ROS 2 already sourced (ROS_DISTRO set and rclpy importable by the venv's Python)
#        is used as it is;
#      - otherwise the runtime shipped in the isaacsim-ros2 wheel inside the venv, folder
#        isaacsim/exts/isaacsim.ros2.core/$ROS_DISTRO (jazzy unless ROS_DISTRO=humble), and exports
#        PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH, ROS_DISTRO, ROS_VERSION, ROS_PYTHON_VERSION;
#   3. RMW_IMPLEMENTATION=rmw_fastrtps_cpp unless already set;
#   4. puts this package first on the runtime paths so `import vla_ros.action`, `ros2 run vla_ros ...`,
#      `ros2 launch vla_ros ...` and launch_ros' Node(package='vla_ros', ...) find it: the colcon
#      install of `make interfaces` (install/vla_ros, with the generated interfaces) when it was
#      built for this ROS_DISTRO, else build/ament_prefix, the development layout of
#      scripts/ament_layout.py (no generated interfaces: the Humble runtime tests the fallback).
# Sourcing again (e.g. with another ROS_DISTRO) replaces what an earlier sourcing added. Used by the Makefile too, so a shell and `make test` see the same environment.

if [ ! -f scripts/env.sh ] || [ ! -f package.xml ]; then
    echo "scripts/env.sh: source me from the vla_ros repository root (cd there first)" >&2
    return 1 2>/dev/null || exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "scripts/env.sh: no .venv here; run 'make venv' first" >&2
    return 1 2>/dev/null || exit 1
fi

VLA_ROS_ROOT=$PWD
export VLA_ROS_ROOT
if [ -n "${1:-}" ]; then export ROS_DISTRO="$1"; fi

# Drop what an earlier sourcing (here or in a parent shell) added, so the system-ROS check below
# sees the caller's own environment and ROS_DISTRO=humble can switch runtimes.
_vla_ros_strip() {
    printf '%s' "$1" | tr ':' '\n' \
        | grep -v -F -e "/isaacsim/exts/isaacsim.ros2.core/" -e "$VLA_ROS_ROOT/build/ament_prefix" -e "$VLA_ROS_ROOT/install/vla_ros" \
        | paste -sd: -
}
for _v in PYTHONPATH LD_LIBRARY_PATH AMENT_PREFIX_PATH PATH; do
    eval "_val=\${$_v:-}"
    _val=$(_vla_ros_strip "$_val")
    if [ -n "$_val" ]; then export "$_v=$_val"; else unset "$_v"; fi
done
unset _v _val
unset -f _vla_ros_strip

# shellcheck disable=SC1091
. .venv/bin/activate

_VLA_ROS_WHEEL_DISTRO=
if [ -n "${ROS_DISTRO:-}" ] && python -c "import rclpy" >/dev/null 2>&1; then
    VLA_ROS_RUNTIME="system ROS 2 $ROS_DISTRO"
else
    _distro=${ROS_DISTRO:-jazzy}
    case "$_distro" in
        jazzy|humble) ;;
        *) echo "scripts/env.sh: ROS_DISTRO=$_distro has no runtime in the wheel (jazzy or humble)" >&2
           return 1 2>/dev/null || exit 1 ;;
    esac
    _sp=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    _ros=$_sp/isaacsim/exts/isaacsim.ros2.core/$_distro
    if [ ! -d "$_ros/rclpy" ]; then
        echo "scripts/env.sh: no ROS 2 runtime at $_ros; run 'make venv' (installs isaacsim-ros2)" >&2
        return 1 2>/dev/null || exit 1
    fi
    export PYTHONPATH="$_ros/rclpy${PYTHONPATH:+:$PYTHONPATH}"
    export LD_LIBRARY_PATH="$_ros/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AMENT_PREFIX_PATH="$_ros${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    export ROS_DISTRO=$_distro ROS_VERSION=2 ROS_PYTHON_VERSION=3
    _VLA_ROS_WHEEL_DISTRO=$_distro
    VLA_ROS_RUNTIME="isaacsim-ros2 wheel, $_distro ($_ros)"
    unset _sp _ros _distro
fi
export VLA_ROS_RUNTIME
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}

# The package itself: the colcon install of `make interfaces` (scripts/build_interfaces.sh) when it
# was built for this distro, with the generated vla_ros.msg / vla_ros.action; otherwise (the
# wheel's Humble, for which no build wheels exist) the development layout of scripts/ament_layout.py,
# which has everything but the generated interfaces. The wheel has no `ros2` executable; the
# layout (or, with the colcon install, a CLI-only layout) gets a bin/ros2 wrapper around ros2cli.
_install=$VLA_ROS_ROOT/install/vla_ros
if [ -f "$VLA_ROS_ROOT/install/.vla_ros_distro" ] \
        && [ "$(cat "$VLA_ROS_ROOT/install/.vla_ros_distro")" = "$ROS_DISTRO" ]; then
    _site=$(echo "$_install"/lib/python3*/site-packages)
    export PYTHONPATH="$_site${PYTHONPATH:+:$PYTHONPATH}"
    export LD_LIBRARY_PATH="$_install/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AMENT_PREFIX_PATH="$_install${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
    VLA_ROS_INSTALL="colcon install ($_install)"
    _layout_args="--cli-only"
    unset _site
else
    VLA_ROS_INSTALL="development layout without generated interfaces ($VLA_ROS_ROOT/build/ament_prefix)"
    _layout_args=""
fi
export VLA_ROS_INSTALL
if [ -n "$_layout_args" ] && [ -z "$_VLA_ROS_WHEEL_DISTRO" ]; then
    :  # a system ROS 2 has its own ros2 command and the install has the package
elif python scripts/ament_layout.py build/ament_prefix $_layout_args \
        ${_VLA_ROS_WHEEL_DISTRO:+--ros2-cli} >/dev/null; then
    [ -n "$_layout_args" ] || export AMENT_PREFIX_PATH="$VLA_ROS_ROOT/build/ament_prefix:$AMENT_PREFIX_PATH"
    export PATH="$VLA_ROS_ROOT/build/ament_prefix/bin:$PATH"
else
    echo "scripts/env.sh: could not build build/ament_prefix; ros2 run/launch will not find vla_ros" >&2
fi
unset _install _layout_args
