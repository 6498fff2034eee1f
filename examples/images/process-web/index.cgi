#!/bin/sh
# GET / (httpd runs /cgi-bin/index.cgi when a directory has no index.html): who answers.
printf 'Content-Type: text/plain\r\n\r\n'
echo "name=$GCI_ID datacenter=$GCI_DC digest=$GCI_DIGEST"
