#!/bin/sh
# copies the documents folder to the backup disk
cp -r "$HOME/Documents" /mnt/backup/
