script_folder="/work/wt"
echo "echo Restoring environment" > "$script_folder/deactivate_conanrunenv-release-armv8.sh"
for v in LD_LIBRARY_PATH DYLD_LIBRARY_PATH
do
   is_defined="true"
   value=$(printenv $v) || is_defined="" || true
   if [ -n "$value" ] || [ -n "$is_defined" ]
   then
       echo export "$v='$value'" >> "$script_folder/deactivate_conanrunenv-release-armv8.sh"
   else
       echo unset $v >> "$script_folder/deactivate_conanrunenv-release-armv8.sh"
   fi
done

export LD_LIBRARY_PATH="/tmp/pytest-of-root/pytest-26/test_a_second_home_downloads_t0/b home/out/arm64/.prebuilt-_7pjzy8n/direct_deploy/mxnet-nnpack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DYLD_LIBRARY_PATH="/tmp/pytest-of-root/pytest-26/test_a_second_home_downloads_t0/b home/out/arm64/.prebuilt-_7pjzy8n/direct_deploy/mxnet-nnpack/lib${DYLD_LIBRARY_PATH:+:$DYLD_LIBRARY_PATH}"